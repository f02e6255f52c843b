"""Housekeeping: the delivery history keeps MAILER_HISTORY_DAYS of finished emails.

A delivery that ended (sent, or failed for good) goes with its attempts once it has not
changed for that long. The same rows are the dedupe record of the emails already handled,
so the settings refuse a history shorter than Kafka would keep an event for redelivery:
a re-read topic must still find every email it holds in the history, or it would send
them again. Every mailer process runs the pass (deletes are idempotent; each batch is a
short transaction, `common/housekeeping.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import utcnow
from common.housekeeping import Rule, delete_spent
from mailer_service.config import MailerSettings
from mailer_service.history import TERMINAL
from mailer_service.models import Delivery

DELETED = Counter("mailer_housekeeping_deleted_total", "Rows housekeeping deleted", ["table"])


def rules(settings: MailerSettings, now: datetime) -> list[Rule]:
    if not settings.history_days:
        return []
    kept = now - timedelta(days=settings.history_days)
    finished = Delivery.status.in_(TERMINAL) & (Delivery.updated_at < kept)
    return [Rule("deliveries", Delivery.event_id, finished)]


async def sweep(
    engine: AsyncEngine, settings: MailerSettings, now: datetime | None = None
) -> dict[str, int]:
    """One pass; the deliveries deleted (their attempts go with them)."""
    return await delete_spent(engine, rules(settings, now or utcnow()), DELETED)
