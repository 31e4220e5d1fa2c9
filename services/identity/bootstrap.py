"""Identity's parts, built once: database, outbox, clock, sealer, token signer, rate limits and
the use cases. The API, the worker, the CLI and the tests all get their parts here (tests pass
their fakes through the keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass

from services.identity.activation import Activation
from services.identity.admin import Administration
from services.identity.audit import AuditTrail
from services.identity.config import IdentitySettings
from services.identity.lockout import Lockout
from services.identity.login import Login
from services.identity.models import messaging, rate_limit_hits
from services.identity.password_reset import PasswordResets
from services.identity.passwords import PasswordHashing
from services.identity.profile import OwnProfile
from services.identity.provisioning import Provisioning
from services.identity.sessions import Sessions
from services.identity.support import Support
from services.identity.takeover import TakeoverExpiryWatch
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.ratelimit import RateLimit
from shared.sealing import Sealer
from shared.tokens import TokenSigner


@dataclass(frozen=True)
class RateLimits:
    """Per-address limits of the public routes, counted in identity's database, so that they
    hold across every instance of the API (`shared.ratelimit.RateLimit`)."""

    login: RateLimit
    activation: RateLimit
    password_reset: RateLimit
    cancel_link: RateLimit


@dataclass(frozen=True)
class IdentityParts:
    settings: IdentitySettings
    db: Database
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    signer: TokenSigner
    passwords: PasswordHashing
    limits: RateLimits
    audit: AuditTrail
    sessions: Sessions
    lockout: Lockout
    login: Login
    activation: Activation
    administration: Administration
    support: Support
    profile: OwnProfile
    resets: PasswordResets
    provisioning: Provisioning
    takeover_expiry: TakeoverExpiryWatch


def rate_limits(settings: IdentitySettings, db: Database, clock: Clock) -> RateLimits:
    """Each group of routes has a budget of its own; the steps of one flow share it."""

    def limit(name: str, per_minute: int, what: str) -> RateLimit:
        return RateLimit(name, per_minute, db=db, table=rate_limit_hits, clock=clock, what=what)

    return RateLimits(
        login=limit("login", settings.login_rate_limit_per_minute, "login requests"),
        activation=limit("activation", settings.activation_rate_limit_per_minute, "activation attempts"),
        password_reset=limit(
            "password_reset", settings.password_reset_rate_limit_per_minute, "password reset requests"
        ),
        cancel_link=limit("cancel_link", settings.cancel_link_rate_limit_per_minute, "cancel links"),
    )


def build(
    settings: IdentitySettings | None = None,
    *,
    clock: Clock | None = None,
    sealer: Sealer | None = None,
    signer: TokenSigner | None = None,
) -> IdentityParts:
    settings = settings or IdentitySettings()
    db = Database(settings.db_url)
    clock = clock or settings.clock()
    sealer = sealer or settings.sealer()
    signer = signer or settings.signer()
    outbox = Outbox(messaging, clock)
    # Every login's success, failure and lock, every change of a second factor and every
    # administrator's and support's action is in the audit trail (docs/identity.md, Audit trail).
    audit = AuditTrail(outbox=outbox, clock=clock)
    sessions = Sessions(settings=settings, outbox=outbox, clock=clock, signer=signer)
    lockout = Lockout(settings=settings, outbox=outbox, clock=clock, sealer=sealer)
    login = Login(
        settings=settings, outbox=outbox, clock=clock, sealer=sealer, lockout=lockout, sessions=sessions, audit=audit
    )
    administration = Administration(
        outbox=outbox, clock=clock, sealer=sealer, code_ttl=settings.activation_code_ttl, sessions=sessions
    )
    return IdentityParts(
        settings=settings,
        db=db,
        outbox=outbox,
        clock=clock,
        sealer=sealer,
        signer=signer,
        passwords=settings.password_hashing(),
        limits=rate_limits(settings, db, clock),
        audit=audit,
        sessions=sessions,
        lockout=lockout,
        login=login,
        activation=Activation(
            outbox=outbox,
            clock=clock,
            sealer=sealer,
            max_failures=settings.activation_max_failures,
            confirmation_ttl=settings.activation_confirmation_ttl,
            confirmation_max_attempts=settings.otp_max_attempts,
            restart_cooldown=settings.otp_resend_cooldown,
        ),
        administration=administration,
        support=Support(
            admin=administration,
            audit=audit,
            letters_per_day=settings.letters_per_login_per_day,
            letter_deadline=settings.resent_letter_deadline,
        ),
        profile=OwnProfile(
            outbox=outbox,
            clock=clock,
            sealer=sealer,
            audit=audit,
            sessions=sessions,
            contact_change_ttl=settings.contact_change_ttl,
            changes_per_day=settings.contact_changes_per_day,
            max_attempts=settings.otp_max_attempts,
            resend_cooldown=settings.otp_resend_cooldown,
            lock_after_failures=settings.login_lock_after_failures,
            lock_duration=settings.login_lock_duration,
        ),
        resets=PasswordResets(
            settings=settings,
            outbox=outbox,
            clock=clock,
            sealer=sealer,
            lockout=lockout,
            sessions=sessions,
            audit=audit,
        ),
        provisioning=Provisioning(
            outbox=outbox,
            clock=clock,
            sealer=sealer,
            code_ttl=settings.activation_code_ttl,
            takeover_notice_period=settings.takeover_notice_period,
        ),
        takeover_expiry=TakeoverExpiryWatch(db=db, outbox=outbox, clock=clock),
    )
