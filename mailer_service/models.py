from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.db import UTCDateTime
from common.events import utcnow


class Base(DeclarativeBase):
    pass


class ProcessedEvent(Base):
    """One row per event the mailer finished with: a redelivered event is not sent again."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # sent | failed
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    type: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
