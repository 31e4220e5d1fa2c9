"""Sessions and their tokens (S7, S12): a two-factor login opens a session; its refresh tokens
work once each; a session ends by logout, by a refresh token presented twice, by the user, or
with all the user's sessions when an administrator, a password reset or a takeover changes the
login. An ended session's access tokens are refused at once: here by `is_live`, in the services
that verify tokens by `SessionEnded` (or the user's own event that ended them)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.config import IdentitySettings
from services.identity.domain import token_digest
from services.identity.models import LoginSession, RefreshToken, User, UserGrant
from shared.clock import Clock, as_utc
from shared.events import SessionEnded, SessionEndReason
from shared.messaging import Outbox
from shared.problems import Problem, Unauthenticated
from shared.tokens import AccessClaims, TokenSigner


class ReauthenticationRequired(Problem):
    """Changes that hand a login's codes or a new login to someone need a recent login: an
    access token copied from a session left open must not be enough."""

    status = 403
    type_suffix = "reauthentication-required"
    title = "Log in again to do this"


class InvalidRefreshToken(Problem):
    status = 401
    type_suffix = "invalid-refresh-token"
    title = "The refresh token is not valid"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


_TOKENS, _SESSIONS = cast(Table, RefreshToken.__table__), cast(Table, LoginSession.__table__)
_USERS, _GRANTS_TABLE = cast(Table, User.__table__), cast(Table, UserGrant.__table__)
_tokens, _sessions, _users, _grants = _TOKENS.c, _SESSIONS.c, _USERS.c, _GRANTS_TABLE.c

# What a refresh runs, as Core statements built once (no ORM compilation, cache keys computed
# once): the token, its session, its user and the user's grants (a row per grant) in one read
# that locks the token's and the session's rows; then the token used, the session used and the
# next token.
_REFRESH_READ = (
    select(
        _tokens.used_at,
        _tokens.expires_at,
        _sessions.id,
        _sessions.ended_at,
        _sessions.expires_at,
        _sessions.user_id,
        _users.status,
        _users.tenant_cvr,
        _users.role,
        _users.functions,
        _grants.cvr,
        _grants.all_accounts,
        _grants.account_numbers,
    )
    .select_from(
        _TOKENS.join(_SESSIONS, _sessions.id == _tokens.session_id)
        .outerjoin(_USERS, _users.id == _sessions.user_id)
        .outerjoin(_GRANTS_TABLE, _grants.user_id == _users.id)
    )
    .where(_tokens.token_hash == bindparam("digest"))
    .with_for_update(of=[_TOKENS, _SESSIONS])
)
_TOKEN_USED = update(_TOKENS).where(_tokens.token_hash == bindparam("digest")).values(used_at=bindparam("now"))
_SESSION_USED = (
    update(_SESSIONS).where(_sessions.id == bindparam("session_id")).values(last_used_at=bindparam("now"))
)
_SESSION_ENDED = (
    update(_SESSIONS)
    .where(_sessions.id == bindparam("session_id"))
    .values(ended_at=bindparam("now"), end_reason=bindparam("reason"))
)
_NEW_TOKEN = insert(_TOKENS).values(
    token_hash=bindparam("digest"),
    session_id=bindparam("session_id"),
    created_at=bindparam("now"),
    expires_at=bindparam("expires_at"),
)
_GRANTS = select(_grants.cvr, _grants.all_accounts, _grants.account_numbers).where(
    _grants.user_id == bindparam("user_id")
)


@dataclass
class Sessions:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    signer: TokenSigner

    # --- issuing and refreshing -------------------------------------------------------

    async def open(
        self, session: AsyncSession, user: User, *, user_agent: str | None = None, client_address: str | None = None
    ) -> TokenPair:
        """A new session and its first tokens. The browser's user agent and address are kept
        so that the user recognises the session in their list of sessions."""
        now = self.clock.now()
        login = LoginSession(
            id=str(uuid.uuid4()),
            user_id=user.id,
            created_at=now,
            expires_at=now + self.settings.refresh_token_ttl,
            user_agent=user_agent[:500] if user_agent else None,
            client_address=client_address[:64] if client_address else None,
            last_used_at=now,
        )
        session.add(login)
        await session.flush()
        return await self._issue(session, user, login)

    async def _issue(self, session: AsyncSession, user: User, login: LoginSession) -> TokenPair:
        return await self._issue_for(
            session,
            user_id=user.id,
            tenant=user.tenant_cvr,
            role=user.role,
            functions=list(user.functions),
            session_id=login.id,
            session_expires_at=as_utc(login.expires_at),
        )

    async def _issue_for(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        tenant: str | None,
        role: str,
        functions: list[str],
        session_id: str,
        session_expires_at: datetime,
        grants: list[tuple[str, bool, list[str]]] | None = None,
    ) -> TokenPair:
        """A new refresh token of the session (stored as its digest) and an access token that
        carries the user's grants as they are now (`grants`, (cvr, all accounts, account
        numbers), when the caller read them already)."""
        now = self.clock.now()
        refresh = secrets.token_urlsafe(32)
        await session.execute(
            _NEW_TOKEN,
            {
                "digest": token_digest(refresh),
                "session_id": session_id,
                "now": now,
                "expires_at": min(now + self.settings.refresh_token_ttl, session_expires_at),
            },
        )
        if grants is None:
            read = await session.execute(_GRANTS, {"user_id": user_id})
            grants = [(cvr, every, numbers) for cvr, every, numbers in read]
        access = self.signer.sign(
            subject=user_id,
            session_id=session_id,
            tenant=tenant,
            role=role,
            grants=[{"cvr": cvr, "accounts": UserGrant.accounts_of(every, numbers)} for cvr, every, numbers in grants],
            functions=functions,
            now=now,
            lifetime=self.settings.access_token_ttl,
        )
        return TokenPair(access, refresh, int(self.settings.access_token_ttl.total_seconds()))

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair:
        """A new pair for a valid refresh token; a reused one ends its whole session (kept,
        though the refresh is refused).

        The token, its session, its user and the user's grants are read in one statement that
        locks the token's and the session's rows (PostgreSQL; SQLite runs write transactions
        one at a time), so two requests with the same token are decided one after the other:
        the second finds it used. The writes are plain statements, without the ORM's unit of
        work; all of them are built once (`_REFRESH_READ` and the ones after it)."""
        now = self.clock.now()
        digest = token_digest(refresh_token)
        rows = (await session.execute(_REFRESH_READ, {"digest": digest})).all()
        if not rows:
            raise InvalidRefreshToken("The refresh token is not known. Log in again.")
        used_at, expires_at, session_id, ended_at, session_expires_at, user_id, status, tenant, role, functions = (
            rows[0][:10]
        )
        if used_at is not None:
            # Someone presents a token that was already exchanged: it leaked. End the session.
            if ended_at is None:
                login = await session.get(LoginSession, session_id)
                assert login is not None
                await self.end(session, login, "refresh-token-reuse")
            raise InvalidRefreshToken(
                "The refresh token was already used, so it may have been copied: the session has been "
                "ended for safety. Log in again."
            ).committing()
        ended = InvalidRefreshToken("The session has ended. Log in again.")
        if ended_at is not None or as_utc(expires_at) <= now:
            raise ended
        if status != "active":
            # Not announced: disabling or deleting a user ends all their sessions and says so
            # (UserDisabled, UserDeleted), and billing then refuses every token of the user.
            ending = {"session_id": session_id, "now": now, "reason": "user-not-active"}
            await session.execute(_SESSION_ENDED, ending)
            raise ended.committing()
        await session.execute(_TOKEN_USED, {"digest": digest, "now": now})
        await session.execute(_SESSION_USED, {"session_id": session_id, "now": now})
        return await self._issue_for(
            session,
            user_id=user_id,
            tenant=tenant,
            role=role,
            functions=list(functions),
            session_id=session_id,
            session_expires_at=as_utc(session_expires_at),
            grants=[(cvr, every, numbers) for *_, cvr, every, numbers in rows if cvr is not None],
        )

    # --- the caller's session ---------------------------------------------------------

    async def is_live(self, session: AsyncSession, session_id: str) -> bool:
        login = await session.get(LoginSession, session_id)
        return login is not None and login.ended_at is None and as_utc(login.expires_at) > self.clock.now()

    async def caller(self, session: AsyncSession, claims: AccessClaims) -> tuple[User, LoginSession]:
        """The token's user and session, both locked for this transaction (user first, as every
        change of a user does), and the session still live: requests that arrive at once with
        one token are decided one after another, each seeing what the one before did."""
        user = await session.get(User, claims.sub, with_for_update=True, populate_existing=True)
        login = await session.get(LoginSession, claims.sid, with_for_update=True, populate_existing=True)
        if user is None or login is None or login.ended_at is not None or login.user_id != user.id:
            raise Unauthenticated("The session of this access token has ended. Log in again.")
        return user, login

    @property
    def reauthentication_minutes(self) -> int:
        """How recent a login must be for what needs one (`ReauthenticationRequired` says it)."""
        return int(self.settings.reauthentication_window.total_seconds() // 60)

    def logged_in_recently(self, login: LoginSession) -> bool:
        """Whether the session's two-factor login was within `reauthentication_window`."""
        return self.clock.now() - as_utc(login.created_at) <= self.settings.reauthentication_window

    # --- ending -------------------------------------------------------------------------

    async def end(self, session: AsyncSession, login: LoginSession, reason: SessionEndReason) -> None:
        """End one live session and announce it in the same transaction (`SessionEnded`), so that
        billing refuses the session's access tokens at once rather than when they expire (S12)."""
        now = self.clock.now()
        login.ended_at, login.end_reason = now, reason
        await self.outbox.add(
            session,
            SessionEnded(
                user_id=uuid.UUID(login.user_id), session_id=uuid.UUID(login.id), reason=reason, ended_at=now
            ),
        )

    async def end_session(self, session: AsyncSession, session_id: str, reason: SessionEndReason) -> None:
        """End the session of this id, if it is still live (logout, a failed re-authentication)."""
        login = await session.get(LoginSession, session_id, with_for_update=True)
        if login is not None and login.ended_at is None:
            await self.end(session, login, reason)

    async def end_all(self, session: AsyncSession, user_id: str, reason: SessionEndReason) -> int:
        """End every live session of the user, each announced (`SessionEnded`) for billing (S12)."""
        live = await self._live(session, user_id)
        for login in live:
            await self.end(session, login, reason)
        return len(live)

    async def end_all_unannounced(self, session: AsyncSession, user_id: str, reason: str) -> int:
        """End every live session of the user where the change's own event tells the services
        that verify tokens to refuse them all (`UserDisabled`, `UserGrantsChanged`, `UserDeleted`)."""
        live = await self._live(session, user_id)
        now = self.clock.now()
        for login in live:
            login.ended_at, login.end_reason = now, reason
        return len(live)

    async def _live(self, session: AsyncSession, user_id: str) -> Sequence[LoginSession]:
        return list(
            await session.scalars(
                select(LoginSession)
                .where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
                .with_for_update()
            )
        )
