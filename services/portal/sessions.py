"""Browser sessions: the cookie is an opaque random value; the user's tokens stay here.

The browser holds one cookie with 256 random bits. The portal stores only the value's
SHA-256 and, sealed under the sealing key ring (bound to that row), what the session needs:
during a login the identity challenge, after it the access and refresh tokens. A copy of the
table opens nothing. A new value is issued at every change of who the browser is (password
accepted, second factor accepted), so a value planted in a browser before a login is worth
nothing after it (session fixation).

Access tokens live 5 minutes; the portal refreshes one that is about to expire, holding the
session's row for the refresh, so that two requests of one browser never present one refresh
token twice (identity would take that for a stolen token and end the session).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete

from services.portal.clients import Caller, Identity, ServiceProblem
from services.portal.config import PortalSettings
from services.portal.models import BrowserSession
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.sealing import SealedSecret, Sealer, SealingError

# Refresh an access token this long before it expires, so that a call made with it does not
# arrive after its end.
REFRESH_MARGIN = timedelta(seconds=30)


def new_cookie_value() -> str:
    return secrets.token_urlsafe(32)


def _row_id(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


@dataclass
class SignedIn:
    """A logged-in browser: who it is (from identity's `GET /v1/me` at login) and its tokens."""

    cookie: str
    user: dict[str, Any]
    access_token: str
    refresh_token: str
    access_expires_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_staff(self) -> bool:
        return self.user.get("tenant_cvr") is None

    @property
    def functions(self) -> set[str]:
        return set(self.user.get("functions") or [])


@dataclass
class LoggingIn:
    """A browser whose password was accepted, on its way through the second factor."""

    cookie: str
    challenge: dict[str, Any]


class SessionEnded(Exception):
    """The session is gone (logged out, expired, or ended by identity): log in again."""


class SessionStore:
    def __init__(self, db: Database, sealer: Sealer, clock: Clock, settings: PortalSettings) -> None:
        self.db = db
        self.sealer = sealer
        self.clock = clock
        self.settings = settings

    # --- sealing --------------------------------------------------------------------------

    def _seal(self, row_id: str, data: dict[str, Any]) -> str:
        return self.sealer.seal(json.dumps(data), context=f"portal-session:{row_id}").model_dump_json()

    def _unseal(self, row: BrowserSession) -> dict[str, Any] | None:
        try:
            sealed = SealedSecret.model_validate_json(row.sealed)
            data: dict[str, Any] = json.loads(self.sealer.unseal(sealed, context=f"portal-session:{row.id}"))
        except (SealingError, ValueError):
            return None  # a key that left the ring: the session ends, the user logs in again
        return data

    # --- CSRF -----------------------------------------------------------------------------

    def csrf_token(self, cookie_value: str) -> str:
        """The token every form carries: a keyed digest of the browser's cookie value, so a
        page of another site, which cannot read the cookie, cannot make it."""
        return self.sealer.digest(cookie_value, context="portal-csrf")

    def csrf_matches(self, cookie_value: str, token: str) -> bool:
        return bool(token) and self.sealer.digest_matches(cookie_value, token, context="portal-csrf")

    # --- life cycle -----------------------------------------------------------------------

    async def _store(
        self, state: str, user_id: str | None, data: dict[str, Any], *, replaces: str | None
    ) -> str:
        """A new row under a new cookie value; the row of `replaces` (the old value) goes."""
        cookie = new_cookie_value()
        row_id = _row_id(cookie)
        now = self.clock.now()
        async with self.db.transaction() as session:
            if replaces is not None:
                await session.execute(delete(BrowserSession).where(BrowserSession.id == _row_id(replaces)))
            session.add(
                BrowserSession(
                    id=row_id,
                    state=state,
                    user_id=user_id,
                    sealed=self._seal(row_id, data),
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + self.settings.session_max_age,
                )
            )
        return cookie

    async def begin_login(self, old_cookie: str | None, challenge: dict[str, Any]) -> str:
        return await self._store("login", None, {"challenge": challenge}, replaces=old_cookie)

    async def update_login(self, login: LoggingIn) -> None:
        await self._update(login.cookie, {"challenge": login.challenge})

    async def sign_in(self, old_cookie: str, tokens: dict[str, Any], user: dict[str, Any]) -> str:
        data = {
            "user": user,
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "access_expires_at": (
                self.clock.now() + timedelta(seconds=int(tokens["expires_in"]))
            ).isoformat(),
        }
        return await self._store("active", user["user_id"], data, replaces=old_cookie)

    async def _update(self, cookie: str, data: dict[str, Any]) -> None:
        row_id = _row_id(cookie)
        async with self.db.transaction() as session:
            row = await session.get(BrowserSession, row_id)
            if row is not None:
                row.sealed = self._seal(row_id, data)

    async def _row(self, cookie: str | None) -> tuple[BrowserSession, dict[str, Any]] | None:
        if not cookie:
            return None
        async with self.db.reading() as session:
            row = await session.get(BrowserSession, _row_id(cookie))
        if row is None or not self._alive(row):
            return None
        data = self._unseal(row)
        return (row, data) if data is not None else None

    def _alive(self, row: BrowserSession) -> bool:
        now = self.clock.now()
        return (
            as_utc(row.expires_at) > now
            and as_utc(row.last_seen_at) + self.settings.session_idle_timeout > now
        )

    async def logging_in(self, cookie: str | None) -> LoggingIn | None:
        found = await self._row(cookie)
        if found is None or found[0].state != "login" or cookie is None:
            return None
        return LoggingIn(cookie=cookie, challenge=found[1]["challenge"])

    async def signed_in(self, cookie: str | None, identity: Identity, caller: Caller) -> SignedIn | None:
        """The browser's session with a usable access token (refreshed when about to expire),
        or None: never logged in, logged out, expired, or ended by identity."""
        found = await self._row(cookie)
        if found is None or found[0].state != "active" or cookie is None:
            return None
        row, data = found
        now = self.clock.now()
        signed = _signed_in(cookie, data)
        if signed.access_expires_at - REFRESH_MARGIN <= now:
            refreshed = await self._refresh(cookie, identity, caller)
            if refreshed is None:
                return None
            signed = refreshed
        elif now - as_utc(row.last_seen_at) > timedelta(seconds=60):
            await self._touch(cookie)
        return signed

    async def _touch(self, cookie: str) -> None:
        async with self.db.transaction() as session:
            row = await session.get(BrowserSession, _row_id(cookie))
            if row is not None:
                row.last_seen_at = self.clock.now()

    async def _refresh(self, cookie: str, identity: Identity, caller: Caller) -> SignedIn | None:
        row_id = _row_id(cookie)
        async with self.db.transaction() as session:
            row = await session.get(BrowserSession, row_id, with_for_update=True)
            if row is None or not self._alive(row):
                return None
            data = self._unseal(row)
            if data is None:
                await session.delete(row)
                return None
            now = self.clock.now()
            signed = _signed_in(cookie, data)
            if signed.access_expires_at - REFRESH_MARGIN > now:
                return signed  # another request of this browser refreshed while this one waited
            try:
                tokens = await identity.refresh(caller, signed.refresh_token)
            except ServiceProblem:
                await session.delete(row)  # identity ended the session (logout elsewhere, disabled, ...)
                return None
            data["access_token"] = tokens["access_token"]
            data["refresh_token"] = tokens["refresh_token"]
            data["access_expires_at"] = (now + timedelta(seconds=int(tokens["expires_in"]))).isoformat()
            row.sealed = self._seal(row_id, data)
            row.last_seen_at = now
        return _signed_in(cookie, data)

    async def remember(self, signed: SignedIn, **values: Any) -> None:
        """Keep something for this session's next pages (e.g. the recovery codes to show once)."""
        found = await self._row(signed.cookie)
        if found is None:
            return
        data = found[1]
        data.setdefault("data", {}).update(values)
        await self._update(signed.cookie, data)

    async def end(self, cookie: str | None) -> None:
        if cookie:
            async with self.db.transaction() as session:
                await session.execute(delete(BrowserSession).where(BrowserSession.id == _row_id(cookie)))

    async def purge(self) -> int:
        """Delete sessions that ended; returns how many."""
        now = self.clock.now()
        idle_since = now - self.settings.session_idle_timeout
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(BrowserSession).where(
                    (BrowserSession.expires_at <= now) | (BrowserSession.last_seen_at <= idle_since)
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)



def _signed_in(cookie: str, data: dict[str, Any]) -> SignedIn:
    return SignedIn(
        cookie=cookie,
        user=data["user"],
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
        access_expires_at=datetime.fromisoformat(data["access_expires_at"]),
        data=data.get("data", {}),
    )
