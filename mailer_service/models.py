from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.clock import utcnow
from common.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class Delivery(Base):
    """One row per event the mailer has worked on: the dedupe store and the history.

    `status` is `retrying` while a retry waits in a delay topic, then `sent` or `failed`;
    an event whose row already covers the attempt it arrives for is not sent again.
    """

    __tablename__ = "deliveries"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_deliveries_recipient_queued", "recipient", "queued_at"),)


class DeliveryAttempt(Base):
    """Every SMTP attempt, for the history endpoint and for operators."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("deliveries.event_id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(16))  # sent | retrying | failed
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
