from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import service_metadata
from shared.messaging import MessagingTables
from shared.ratelimit import rate_limit_table


class Base(DeclarativeBase):
    metadata = service_metadata()


messaging = MessagingTables.define(Base.metadata)
# The per-address limits of the public routes, shared by every instance of the API.
rate_limit_hits = rate_limit_table(Base.metadata)


class Company(Base):
    """Projection of `billing.customers`: companies, their group and their accounts."""

    __tablename__ = "companies"

    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_cvr: Mapped[str | None] = mapped_column(String(8), index=True)
    account_numbers: Mapped[list[str]] = mapped_column(JSON)


class Tenant(Base):
    """A company that has self-service access, with the subsidiaries below it (S14)."""

    __tablename__ = "tenants"

    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # None for support staff, who belong to no company (S13).
    tenant_cvr: Mapped[str | None] = mapped_column(ForeignKey("tenants.cvr"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    mobile: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), index=True)
    functions: Mapped[list[str]] = mapped_column(JSON)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    application_id: Mapped[str | None] = mapped_column(String(36))
    # The language of every message to the user (codes, notices, order and invoice emails) and
    # of the portal after login: the application's for a letter login (also for the letter
    # support sends again, S3), the creating administrator's choice for a colleague, the user's
    # own choice since (`PATCH /v1/me`). Logins made before it was kept are Danish.
    language: Mapped[str] = mapped_column(String(2), default="da")
    # Of a login from an application: when it was made, for the letter support sends again (S3).
    # Unset for logins made before it was kept: created_at.
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the newest activation code stops working; a pending login past it is `expired`
    # (`lifecycle_status`). Set with every code issued, so a new code is a new expiry.
    activation_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mobile_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # TOTP secrets are sealed at rest, like codes on the bus (services/identity/totp.py).
    totp_secret: Mapped[str | None] = mapped_column(String(500))
    totp_pending_secret: Mapped[str | None] = mapped_column(String(500))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    totp_last_timecode: Mapped[int | None] = mapped_column(Integer)

    grants: Mapped[list[UserGrant]] = relationship(lazy="raise", cascade="all, delete-orphan")

    @property
    def customer_cvr(self) -> str:
        """The company of a customer's login, as the events about it carry it. Support staff's
        logins belong to none, and no such event is ever about one."""
        if self.tenant_cvr is None:
            raise ValueError(f"the login {self.id} belongs to no company")
        return self.tenant_cvr

    @property
    def from_application(self) -> bool:
        """The company's first administrator, made from an application: its code came by letter
        to the company's e-Boks (S2), and its contact details from a public form anyone can fill in."""
        return self.application_id is not None


class UserGrant(Base):
    """Which company a user may act for, and which of its accounts (S5.4, S5.5)."""

    __tablename__ = "user_grants"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    all_accounts: Mapped[bool]
    account_numbers: Mapped[list[str]] = mapped_column(JSON)

    @classmethod
    def of(cls, cvr: str, accounts: Literal["all"] | list[str]) -> UserGrant:
        """Full access (`"all"`, S5.5) or the listed account numbers (limited access)."""
        if accounts == "all":
            return cls(cvr=cvr, all_accounts=True, account_numbers=[])
        return cls(cvr=cvr, all_accounts=False, account_numbers=sorted(accounts))

    @property
    def accounts(self) -> Literal["all"] | list[str]:
        return self.accounts_of(self.all_accounts, self.account_numbers)

    @staticmethod
    def accounts_of(all_accounts: bool, account_numbers: list[str]) -> Literal["all"] | list[str]:
        """A grant's accounts as its columns hold them, for a grant read column by column."""
        return "all" if all_accounts else list(account_numbers)


class ActivationCode(Base):
    __tablename__ = "activation_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)


class PendingActivation(Base):
    """An activation with the letter's code, waiting for the codes that confirm the mobile number
    and email the activating person gave. The letter's code is used only when they are confirmed;
    until then nothing about the login changes."""

    __tablename__ = "pending_activations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    activation_code_id: Mapped[str] = mapped_column(ForeignKey("activation_codes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    mobile: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    # Keyed digests (`Sealer.digest`), never the codes themselves.
    sms_code_hash: Mapped[str] = mapped_column(String(200))
    email_code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # completed, replaced (a newer start), blocked (too many wrong codes), withdrawn (the login went)
    end_reason: Mapped[str | None] = mapped_column(String(20))


class WaitingApplication(Base):
    """An application that arrived before its company did on `billing.customers`."""

    __tablename__ = "waiting_applications"

    application_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cvr: Mapped[str] = mapped_column(String(8), index=True)
    event_json: Mapped[str] = mapped_column(String(4000))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FailureCounter:
    """Password tries counted before they are checked, with the delay and lock they lead to."""

    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginThrottle(FailureCounter, Base):
    """Password tries per username, whether or not the username exists (no enumeration)."""

    __tablename__ = "login_throttles"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)


class TrustedDevice(FailureCounter, Base):
    """A browser or app that completed a two-factor login. Presenting its token with the
    password lets the login past a lock on the username (a stranger's burst of wrong
    passwords cannot lock the user out), counting that device's own failures instead."""

    __tablename__ = "trusted_devices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # `login`: issued after a two-factor login; `email`: sent to the user's email to unlock.
    origin: Mapped[str] = mapped_column(String(10), default="login")


class LoginChallenge(Base):
    """The second step of a login: the password was right, a one-time code is still due (S7)."""

    __tablename__ = "login_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    code_hash: Mapped[str | None] = mapped_column(String(200))
    code_channel: Mapped[str | None] = mapped_column(String(10))
    code_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sends: Mapped[int] = mapped_column(Integer, default=0)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The trusted device the password came with, if any: it stays trusted when the login completes.
    device_id: Mapped[str | None] = mapped_column(String(36))


class LoginSession(Base):
    """One login; its refresh tokens rotate, and ending it ends all of them."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(50))
    # What the user sees of it in their list of sessions; unset for sessions opened before
    # they were kept (last used: when it began).
    user_agent: Mapped[str | None] = mapped_column(String(500))
    client_address: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RecoveryCode(Base):
    """One-time codes for when the phone is lost; shown once at TOTP enrolment (S7)."""

    __tablename__ = "recovery_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ContactChange(Base):
    """A user's own change of email or mobile number, waiting for the code sent to the new
    address: only the code coming back proves the address is the user's, so nothing about the
    login changes before it does."""

    __tablename__ = "contact_changes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    field: Mapped[str] = mapped_column(String(10))  # email or mobile
    new_value: Mapped[str] = mapped_column(String(320))
    # A keyed digest (`Sealer.digest`), never the code itself.
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # completed, replaced (a newer change of the same field), blocked (too many wrong codes), or
    # password-changed, password-reset, second-factor-reset (the user took the login back)
    end_reason: Mapped[str | None] = mapped_column(String(20))


class AuditEntry(Base):
    """The audit trail: identity's own entries (each also published on identity.audit) and,
    kept from `billing.audit`, billing's (`source`). Staff read all of it; a company's
    administrators read their company's within their grants (`GET /v1/audit`)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # Newest first per company, the administrators' and support's usual read.
        Index("ix_audit_log_tenant_cvr_at", "tenant_cvr", "at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # None for a failed login with a username nobody has.
    actor_id: Mapped[str | None] = mapped_column(String(36), index=True)
    actor_role: Mapped[str | None] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(50))
    target_user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # Of an identity entry: the tenant of the user concerned; of a billing entry: the company changed.
    tenant_cvr: Mapped[str | None] = mapped_column(String(8))
    client_address: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(10), default="identity", server_default="identity")
    subject_username: Mapped[str | None] = mapped_column(String(64))
    account_number: Mapped[str | None] = mapped_column(String(12))
    target: Mapped[str | None] = mapped_column(String(60))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PasswordReset(Base):
    """A forgotten password being reset: the email code, then the second factor and the new
    password, all bound to this id. One is made for every request, also when no login matches
    (then no code is sent and no code can ever match), so the answer tells nobody whether the
    username or email exists."""

    __tablename__ = "password_resets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The failure counter of what was asked for (`password_reset.counter_key`): the normalised
    # username, or `@` and a digest of the email address. Wrong codes count on it, whether or not
    # a login has it, as wrong passwords do on a username.
    username: Mapped[str | None] = mapped_column(String(64))
    # Set by the right email code: the login being reset.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    email_confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The SMS code of the second step, a keyed digest (`Sealer.digest`).
    sms_code_hash: Mapped[str | None] = mapped_column(String(200))
    sms_code_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sms_sends: Mapped[int] = mapped_column(Integer, default=0)
    sms_last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # completed, replaced (a newer reset of the login), blocked (too many wrong codes)
    end_reason: Mapped[str | None] = mapped_column(String(20))


class PasswordResetCode(Base):
    """The code emailed to one login for a reset; an email shared by several logins gets one
    code per login, so the code also says which login is being reset."""

    __tablename__ = "password_reset_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reset_id: Mapped[str] = mapped_column(ForeignKey("password_resets.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))  # a keyed digest, never the code
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_OPEN_TAKEOVER_SQL = text("status = 'open'")


class Takeover(Base):
    """A request to take over a company's administration through its e-Boks (beyond S3; S2: the
    letter proves authority for the company). Its login (`user_id`) is a pending first
    administrator whose letter code works only from `usable_from`, after the company's
    administrators were told and could cancel it; used, the old administrators are disabled."""

    __tablename__ = "takeovers"
    __table_args__ = (
        # One open takeover a company, enforced by the database: a second is refused.
        Index(
            "uq_takeovers_open_cvr",
            "cvr",
            unique=True,
            sqlite_where=_OPEN_TAKEOVER_SQL,
            postgresql_where=_OPEN_TAKEOVER_SQL,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cvr: Mapped[str] = mapped_column(String(8), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    application_id: Mapped[str] = mapped_column(String(36))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    usable_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # open, cancelled, expired, completed
    status: Mapped[str] = mapped_column(String(20))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who cancelled it, where a person did (an administrator, by link or in the portal).
    ended_by: Mapped[str | None] = mapped_column(String(36))


class TakeoverNotice(Base):
    """The notice of a takeover to one administrator (email and SMS), with its cancel link's
    token: single use, stored only as a keyed digest (`Sealer.digest`)."""

    __tablename__ = "takeover_notices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    takeover_id: Mapped[str] = mapped_column(ForeignKey("takeovers.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
