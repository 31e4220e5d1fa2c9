"""The portal's only data: browser sessions (an opaque cookie mapped to the user's tokens)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class BrowserSession(Base):
    """One browser's session. The cookie holds a random 256-bit value; only its SHA-256 is
    stored, so a copy of this table opens no session. The tokens are sealed (AES-256-GCM
    under the sealing key ring, bound to the row), so it gives none of them away either."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie value, hex
    # `login`: the password was right and a second factor is awaited; `active`: logged in.
    state: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(36))
    sealed: Mapped[str] = mapped_column(Text)  # sealed JSON: tokens, or the login challenge
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_browser_sessions_expires_at", "expires_at"),)
