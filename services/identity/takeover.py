"""Taking over a company's administration through its e-Boks (beyond S3; S2).

When a company's administrators are gone, whoever can read the company's e-Boks may take over:
the letter is what proves authority for the company (S2). An application with `takeover` for
a company that has an activated administrator becomes a takeover:

- a new first-administrator login, pending, whose letter code works only after a notice
  period (`TAKEOVER_NOTICE_PERIOD`, 72 hours) and for the activation code's validity after it;
- at the same moment every active administrator of the company, and of each company above it
  in the group whose administrator holds it (S14), is told by email and SMS, each with a link
  that cancels the takeover (a single-use token, stored as a keyed digest); a logged-in
  administrator can cancel it in the portal too;
- the code used after the notice period (the letter's two-step activation) activates the new
  administrator and disables the company's former administrators (not deleted; their
  sessions end), who are told by email. The group's administrators keep their logins.

One open takeover a company: another asked for meanwhile is refused (`takeover-pending`).
Requested, cancelled, expired and completed are events and audit records.

Locks: the company (`COMPANY_LOCK`), then the new login's user row, then the takeover row —
the order provisioning and the activation's confirmation take them — so a cancellation racing
the completion ends in exactly one of them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.audit import AuditTrail
from services.identity.models import Company, LoginSession, Takeover, TakeoverNotice, User, UserGrant
from services.identity.provisioning import COMPANY_LOCK, ancestors_from, remove_login
from shared.clock import Clock, as_utc
from shared.db import Database, lock_for_transaction
from shared.events import (
    Applicant,
    TakeoverCancelled,
    TakeoverCompleted,
    TakeoverExpired,
    TakeoverNoticeIssued,
    TakeoverNotified,
    TakeoverRequested,
    UserDisabled,
)
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.problems import Conflict, Problem
from shared.sealing import Sealer

log = logging.getLogger(__name__)

OPEN, CANCELLED, EXPIRED, COMPLETED = "open", "cancelled", "expired", "completed"
_TOKEN_CONTEXT = "takeover-cancel"  # noqa: S105 - the digest's context, not a secret


def _token_context(notice_id: str) -> str:
    return f"{_TOKEN_CONTEXT}:{notice_id}"


@dataclass(frozen=True)
class TakeoverTerms:
    """How long the administrators have to cancel, and how long the code works after that."""

    notice_period: timedelta
    code_ttl: timedelta

    @property
    def notice_hours(self) -> int:
        return int(self.notice_period.total_seconds() // 3600)


async def open_takeover_of(session: AsyncSession, user_id: str, *, lock: bool = False) -> Takeover | None:
    """The open takeover whose new login this is, if any."""
    query = select(Takeover).where(Takeover.user_id == user_id, Takeover.status == OPEN)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def open_takeover_of_company(session: AsyncSession, cvr: str) -> Takeover | None:
    return await session.scalar(
        select(Takeover).where(Takeover.cvr == cvr, Takeover.status == OPEN).with_for_update()
    )


async def begin(
    session: AsyncSession,
    *,
    outbox: Outbox,
    sealer: Sealer,
    now: datetime,
    terms: TakeoverTerms,
    user: User,
    company: Company,
    application_id: uuid.UUID,
    ancestors: list[str],
) -> Takeover:
    """Record the takeover of `company` by the new pending login `user`, and tell the company's
    administrators (and the group's who hold it) by email and SMS, each with a cancel link.
    The caller holds the company's lock and has sent the letter."""
    takeover = Takeover(
        id=str(uuid.uuid4()),
        cvr=company.cvr,
        user_id=user.id,
        application_id=str(application_id),
        requested_at=now,
        usable_from=now + terms.notice_period,
        expires_at=now + terms.notice_period + terms.code_ttl,
        status=OPEN,
    )
    session.add(takeover)
    await session.flush()  # the database's one-open-takeover rule answers here

    applicant = Applicant(
        name=user.name,
        email=mask_contact(user.email),
        mobile=mask_contact(user.mobile),
        applied_at=as_utc(user.applied_at or now),
    )
    notified: list[TakeoverNotified] = []
    for admin in await administrators_told(session, company.cvr, ancestors):
        notice_id = str(uuid.uuid4())
        secret = secrets.token_urlsafe(32)
        session.add(
            TakeoverNotice(
                id=notice_id,
                takeover_id=takeover.id,
                user_id=admin.id,
                token_hash=sealer.digest(secret, context=_token_context(notice_id)),
                sent_at=now,
            )
        )
        token = f"{notice_id}.{secret}"
        await outbox.add(
            session,
            TakeoverNoticeIssued(
                takeover_id=uuid.UUID(takeover.id),
                notice_id=uuid.UUID(notice_id),
                user_id=uuid.UUID(admin.id),
                cvr=company.cvr,
                company_name=company.name,
                name=admin.name,
                email=admin.email,
                mobile=admin.mobile,
                language=admin.language or "da",  # type: ignore[arg-type]
                requested_at=now,
                usable_from=as_utc(takeover.usable_from),
                cancel_token=sealer.seal(
                    token, context=TakeoverNoticeIssued.sealing_context(uuid.UUID(notice_id))
                ),
                applicant=applicant,
            ),
        )
        notified.append(_notified(admin))
    await outbox.add(
        session,
        TakeoverRequested(
            takeover_id=uuid.UUID(takeover.id),
            cvr=company.cvr,
            user_id=uuid.UUID(user.id),
            application_id=application_id,
            requested_at=now,
            usable_from=as_utc(takeover.usable_from),
            expires_at=as_utc(takeover.expires_at),
            notified=notified,
        ),
    )
    await AuditTrail(outbox, _Fixed(now)).record(
        session, actor=user, action="takeover.requested", target=user, tenant_cvr=company.cvr
    )
    log.warning(
        "takeover %s of %s requested; %d administrator(s) told; usable from %s",
        takeover.id,
        company.cvr,
        len(notified),
        as_utc(takeover.usable_from).isoformat(),
    )
    return takeover


def is_administrator(user: User) -> bool:
    """A login that administers its company's logins: the first administrator, and colleagues
    given the user administration function (S12)."""
    return user.role == "administrator" or "user_admin" in (user.functions or [])


async def administrators_told(session: AsyncSession, cvr: str, ancestors: list[str]) -> list[User]:
    """The company's active administrators, and the group's (the companies above it) whose
    grants include it (S14): each can cancel the takeover."""
    candidates = [
        user
        for user in await session.scalars(
            select(User)
            .where(User.tenant_cvr.in_([cvr, *ancestors]), User.status == "active")
            .order_by(User.tenant_cvr, User.created_at)
        )
        if is_administrator(user)
    ]
    group = [u.id for u in candidates if u.tenant_cvr != cvr]
    holding = (
        set(
            await session.scalars(
                select(UserGrant.user_id).where(UserGrant.user_id.in_(group), UserGrant.cvr == cvr)
            )
        )
        if group
        else set()
    )
    return [u for u in candidates if u.tenant_cvr == cvr or u.id in holding]


async def still_administers(session: AsyncSession, notice: TakeoverNotice, takeover: Takeover) -> bool:
    """Whether the login a notice went to is still one that would be told: a cancel link carries
    the authority its administrator had, and no more once that is gone (disabled, deleted, the
    user administration function or the grant of the company taken away)."""
    company = await session.get(Company, takeover.cvr)
    ancestors = await ancestors_from(session, company.parent_cvr if company else None)
    return notice.user_id in {u.id for u in await administrators_told(session, takeover.cvr, ancestors)}


def _notified(user: User) -> TakeoverNotified:
    return TakeoverNotified(
        user_id=uuid.UUID(user.id),
        name=user.name,
        email=user.email,
        language=user.language or "da",  # type: ignore[arg-type]
    )


class _Fixed:
    """A clock that says `now`, so that one step's records carry one moment."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


# --- the notice period, expiry and completion (from the activation) ---------------------------


async def expire(
    session: AsyncSession, outbox: Outbox, takeover: Takeover, user: User, now: datetime
) -> None:
    """The code was not used in time: the takeover ends and its login is withdrawn. The caller
    holds the user's row."""
    takeover.status, takeover.ended_at = EXPIRED, now
    await remove_login(session, outbox, user, reason="takeover-expired", now=now)
    await outbox.add(
        session,
        TakeoverExpired(
            takeover_id=uuid.UUID(takeover.id), cvr=takeover.cvr, user_id=uuid.UUID(user.id), expired_at=now
        ),
    )
    await AuditTrail(outbox, _Fixed(now)).record(
        session, actor=user, action="takeover.expired", target=user, tenant_cvr=takeover.cvr
    )
    log.info("takeover %s of %s expired unused", takeover.id, takeover.cvr)


async def complete(
    session: AsyncSession, outbox: Outbox, takeover: Takeover, user: User, now: datetime
) -> None:
    """The new administrator is active (the caller made it so, holding its row): disable the
    company's former administrators (its own logins with the user administration function; the
    group's keep theirs), end their sessions and tell them by email."""
    takeover.status, takeover.ended_at = COMPLETED, now
    audit = AuditTrail(outbox, _Fixed(now))
    former = [
        old
        for old in await session.scalars(
            select(User)
            .where(User.tenant_cvr == takeover.cvr, User.status.in_(("active", "pending")), User.id != user.id)
            .order_by(User.id)
            .with_for_update()
        )
        if is_administrator(old)
    ]
    disabled: list[TakeoverNotified] = []
    for old in former:
        old.status = "disabled"
        for login in await session.scalars(
            select(LoginSession).where(LoginSession.user_id == old.id, LoginSession.ended_at.is_(None))
        ):
            login.ended_at, login.end_reason = now, "disabled-by-takeover"
        # UserDisabled makes the services that verify tokens refuse the sessions' tokens at once.
        await outbox.add(
            session,
            UserDisabled(
                user_id=uuid.UUID(old.id),
                tenant_cvr=takeover.cvr,
                by_user_id=uuid.UUID(user.id),
                disabled_at=now,
            ),
        )
        await audit.record(
            session, actor=user, action="user.disabled-by-takeover", target=old, tenant_cvr=takeover.cvr
        )
        if old.activated_at is not None:  # a login never activated has nobody to tell
            disabled.append(_notified(old))
    company = await session.get(Company, takeover.cvr)
    await outbox.add(
        session,
        TakeoverCompleted(
            takeover_id=uuid.UUID(takeover.id),
            cvr=takeover.cvr,
            company_name=company.name if company else f"CVR {takeover.cvr}",
            user_id=uuid.UUID(user.id),
            new_administrator_name=user.name,
            disabled=disabled,
            completed_at=now,
        ),
    )
    await audit.record(session, actor=user, action="takeover.completed", target=user, tenant_cvr=takeover.cvr)
    log.warning(
        "takeover %s of %s completed; %d administrator(s) disabled", takeover.id, takeover.cvr, len(former)
    )


# --- cancelling -------------------------------------------------------------------------------


class UnknownCancelLink(Problem):
    status = 404
    type_suffix = "unknown-cancel-link"
    title = "The cancel link is not known"


class CancelLinkUsed(Problem):
    status = 410
    type_suffix = "cancel-link-used"
    title = "The cancel link has been used"


class CancelLinkRevoked(Problem):
    status = 403
    type_suffix = "cancel-link-revoked"
    title = "The cancel link's administrator no longer administers the company"


class TakeoverEnded(Conflict):
    type_suffix = "takeover-ended"
    title = "The takeover has already ended"


def unknown_link() -> UnknownCancelLink:
    return UnknownCancelLink(
        "This cancel link is not known. Use the whole link from the newest email or SMS about the "
        "takeover; or log in to the portal, where an administrator can cancel it."
    )


def revoked_link(company_name: str, cvr: str) -> CancelLinkRevoked:
    return CancelLinkRevoked(
        f"This link was sent to a login that no longer administers {company_name} (CVR "
        f"{cvr}): it was disabled or deleted, or its user administration or its "
        "access to the company was taken away. An administrator of the company can cancel the "
        "takeover with their own link or in the portal."
    )


def ended(takeover: Takeover) -> TakeoverEnded:
    what = {
        CANCELLED: "was cancelled",
        EXPIRED: "expired: its code was not used in time",
        COMPLETED: "was completed: the new administrator is active and the former ones are "
        "disabled. If this was not your company's wish, contact support at once",
    }[takeover.status]
    return TakeoverEnded(
        f"The takeover of the administration of CVR {takeover.cvr} {what}; there is nothing to cancel.",
        takeover_status=takeover.status,
    )



@dataclass(frozen=True)
class Found:
    """A cancel link's notice and its takeover."""

    notice: TakeoverNotice
    takeover: Takeover
    company_name: str


async def find_by_token(session: AsyncSession, sealer: Sealer, token: str) -> Found | None:
    """The notice a cancel link's token belongs to, or None; one digest check either way, so an
    unknown notice and a wrong token take the same work."""
    notice_id, _, secret = token.partition(".")
    notice = None
    with contextlib.suppress(ValueError):  # not an id: no notice
        notice = await session.get(TakeoverNotice, str(uuid.UUID(notice_id)))
    stored = notice.token_hash if notice else sealer.digest("unknown", context=_TOKEN_CONTEXT)
    right = sealer.digest_matches(secret, stored, context=_token_context(notice.id if notice else ""))
    if notice is None or not right:
        return None
    takeover = await session.get(Takeover, notice.takeover_id)
    assert takeover is not None  # notices go with their takeover
    company = await session.get(Company, takeover.cvr)
    return Found(notice, takeover, company.name if company else f"CVR {takeover.cvr}")


async def cancel(
    session: AsyncSession,
    outbox: Outbox,
    takeover_id: str,
    *,
    by: User,
    now: datetime,
    client_address: str | None,
    notice_id: str | None = None,
) -> Takeover:
    """Cancel the takeover, or refuse: the link was used already (`CancelLinkUsed`), the
    takeover has ended (`TakeoverEnded`, its status says how; the link is used up all the same)
    or the link's administrator no longer administers the company (`CancelLinkRevoked`). Locks
    the company, the new login, the notice and the takeover, in that order."""
    peek = await session.get(Takeover, takeover_id)
    assert peek is not None
    await lock_for_transaction(session, COMPANY_LOCK, peek.cvr)
    user = await session.get(User, peek.user_id, with_for_update=True, populate_existing=True)
    notice = None
    if notice_id is not None:
        notice = await session.get(TakeoverNotice, notice_id, with_for_update=True, populate_existing=True)
        assert notice is not None
        if notice.used_at is not None:
            raise CancelLinkUsed("This cancel link has been used already; each link works once.")
    takeover = await session.get(Takeover, takeover_id, with_for_update=True, populate_existing=True)
    assert takeover is not None
    if notice is not None and takeover.status == OPEN and not await still_administers(session, notice, takeover):
        # Checked under the company's lock: no change of access in between.
        company = await session.get(Company, takeover.cvr)
        raise revoked_link(company.name if company else f"CVR {takeover.cvr}", takeover.cvr)
    if notice is not None:
        notice.used_at = now  # single use, whatever the takeover's state
    if takeover.status != OPEN:
        raise ended(takeover).committing()
    takeover.status, takeover.ended_at, takeover.ended_by = CANCELLED, now, by.id
    if user is not None and user.status != "deleted":
        await remove_login(session, outbox, user, reason="takeover-cancelled", now=now)
    await outbox.add(
        session,
        TakeoverCancelled(
            takeover_id=uuid.UUID(takeover.id),
            cvr=takeover.cvr,
            user_id=uuid.UUID(takeover.user_id),
            by_user_id=uuid.UUID(by.id),
            cancelled_at=now,
        ),
    )
    await AuditTrail(outbox, _Fixed(now)).record(
        session,
        actor=by,
        action="takeover.cancelled",
        target=user,
        tenant_cvr=takeover.cvr,
        client_address=client_address,
    )
    log.warning("takeover %s of %s cancelled by %s", takeover.id, takeover.cvr, by.id)
    return takeover


async def held_open_takeovers(session: AsyncSession, caller: User) -> list[tuple[Takeover, str]]:
    """The open takeovers of the companies the caller holds (their own, or below it in the
    group), with each company's name: an administrator may cancel these."""
    held = list(await session.scalars(select(UserGrant.cvr).where(UserGrant.user_id == caller.id)))
    takeovers = list(
        await session.scalars(
            select(Takeover)
            .where(Takeover.cvr.in_(held), Takeover.status == OPEN)
            .order_by(Takeover.requested_at)
        )
    )
    names = {c.cvr: c.name for c in await session.scalars(select(Company).where(Company.cvr.in_(held)))}
    return [(t, names.get(t.cvr, f"CVR {t.cvr}")) for t in takeovers]


class TakeoverExpiryWatch:
    """Ends the open takeovers whose code was not used in time (the identity worker, now and
    then; an activation with an expired code ends its own at once)."""

    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock

    async def check(self) -> int:
        now = self._clock.now()
        async with self._db.reading() as session:
            due = list(
                await session.scalars(
                    select(Takeover.id).where(Takeover.status == OPEN, Takeover.expires_at <= now)
                )
            )
        for takeover_id in due:
            async with self._db.transaction() as session:
                peek = await session.get(Takeover, takeover_id)
                assert peek is not None
                await lock_for_transaction(session, COMPANY_LOCK, peek.cvr)
                user = await session.get(User, peek.user_id, with_for_update=True, populate_existing=True)
                takeover = await session.get(
                    Takeover, takeover_id, with_for_update=True, populate_existing=True
                )
                if user is None or takeover is None or takeover.status != OPEN:
                    continue
                await expire(session, self._outbox, takeover, user, now)
        return len(due)
