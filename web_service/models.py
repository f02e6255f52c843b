from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.clock import utcnow
from common.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class WebSession(Base):
    """A browser's session. The cookie holds a random id; only its SHA-256 is stored.
    `tokens` (the API token pair) and `data` (CSRF secret, pending addresses, notices) are
    sealed with the session key. `version` counts token pairs: a refresh writes the next
    pair only over the version it started from, and `refreshing_until` is the lease that
    lets one request at a time, across every web instance, spend the refresh token."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(default=0)
    tokens: Mapped[str | None] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text)
    refreshing_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
