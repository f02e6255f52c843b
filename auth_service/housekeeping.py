"""Housekeeping: auth's tables keep what can still decide something, and not much more.

Every refresh adds a token row, every login a session; codes, lockout counters, outbox
rows and audit events pile up the same way. A pass deletes, once each has been dead for
AUTH_RETAIN_SPENT_HOURS:

- sessions ended, or unused for longer than a refresh token lives (their tokens go with
  them, ON DELETE CASCADE);
- refresh tokens past their expiry. A superseded token stays until then: presenting it
  is what reveals a stolen one;
- codes used, retired or expired; an unverified account's newest verification code stays
  with the account, since it may carry the password that verification makes active;
- lockout and code-budget counters that no longer count (the lock is over, and the
  failures are older than the window that would still add to them);
- outbox rows settled: an email the mailer confirmed or that was closed as undelivered,
  an event published to a topic nobody confirms;

and, on their own clocks,

- accounts never verified, with no code sent for AUTH_UNVERIFIED_ACCOUNT_DAYS (and none
  still valid): the address is free again and a stranger's attempt is not kept for good;
- audit events older than AUTH_AUDIT_RETENTION_DAYS.

Rows go in batches, each batch its own short transaction, so a pass never holds
SQLite's one writer, or PostgreSQL's row locks, for long. Each DELETE states its condition
on the rows it deletes as well as in the batch's subquery: on PostgreSQL, a row that a
concurrent request changed (a sign-up again for an unverified address) is judged again in
its new state before it goes. Only the process that relays the outbox runs the periodic
pass, so several instances do not repeat it; `python -m auth_service housekeep` runs one now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import ColumnElement, and_, delete, false, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import QueryableAttribute

from auth_service.config import AuthSettings
from auth_service.models import (
    AddressThrottle,
    AuditEvent,
    OneTimeCode,
    OutboxEvent,
    RefreshToken,
    User,
    UserSession,
)
from auth_service.outbox import ACKNOWLEDGED_TOPICS
from common.clock import utcnow
from common.events import EmailEventType
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BATCH = 500
FIRST_PASS_SECONDS = 60.0
DELETED = Counter("auth_housekeeping_deleted_total", "Rows housekeeping deleted", ["table"])
VERIFY = EmailEventType.EMAIL_VERIFICATION.value


@dataclass(frozen=True)
class Rule:
    name: str
    key: QueryableAttribute[Any]  # the primary key of the rows to delete
    dead: ColumnElement[bool]


def rules(settings: AuthSettings, now: datetime) -> list[Rule]:
    spent = now - timedelta(hours=settings.retain_spent_hours)
    refresh_ttl = timedelta(seconds=settings.refresh_token_ttl_seconds)
    lockout_reset = timedelta(seconds=settings.lockout_reset_seconds)
    code_window = timedelta(seconds=settings.code_failure_window_seconds)
    verified = select(User.id).where(User.email_verified).scalar_subquery()
    found = [
        Rule(
            "sessions",
            UserSession.id,
            or_(
                UserSession.ended_at < spent,
                and_(
                    UserSession.ended_at.is_(None), UserSession.last_used_at < spent - refresh_ttl
                ),
            ),
        ),
        Rule("refresh_tokens", RefreshToken.id, RefreshToken.expires_at < spent),
        Rule(
            "one_time_codes",
            OneTimeCode.id,
            or_(
                OneTimeCode.consumed_at < spent,
                and_(
                    OneTimeCode.expires_at < spent,
                    or_(OneTimeCode.purpose != VERIFY, OneTimeCode.user_id.in_(verified)),
                ),
            ),
        ),
        Rule(
            "address_throttle",
            AddressThrottle.email,
            and_(
                or_(AddressThrottle.locked_until.is_(None), AddressThrottle.locked_until < spent),
                or_(
                    AddressThrottle.last_login_failure_at.is_(None),
                    AddressThrottle.last_login_failure_at < spent - lockout_reset,
                ),
                or_(
                    AddressThrottle.code_window_started_at.is_(None),
                    AddressThrottle.code_window_started_at < spent - code_window,
                ),
            ),
        ),
        Rule(
            "outbox",
            OutboxEvent.id,
            or_(
                OutboxEvent.acked_at < spent,
                and_(OutboxEvent.topic.not_in(ACKNOWLEDGED_TOPICS), OutboxEvent.sent_at < spent),
            ),
        ),
    ]
    if settings.unverified_account_days:
        # No code sent since, and none sent before that can still be valid.
        quiet = timedelta(days=settings.unverified_account_days)
        idle_since = now - max(quiet, timedelta(seconds=settings.code_ttl_seconds))
        unverified = and_(
            User.email_verified == false(),
            User.created_at < idle_since,
            or_(User.last_mail_at.is_(None), User.last_mail_at < idle_since),
        )
        found.insert(0, Rule("unverified_accounts", User.id, unverified))
    if settings.audit_retention_days:
        kept = now - timedelta(days=settings.audit_retention_days)
        found.append(Rule("audit_events", AuditEvent.id, AuditEvent.at < kept))
    return found


async def _delete(engine: AsyncEngine, rule: Rule) -> int:
    deleted = 0
    while True:
        batch = select(rule.key).where(rule.dead).limit(BATCH)
        statement = delete(rule.key.class_).where(rule.dead, rule.key.in_(batch))
        async with engine.begin() as conn:
            count = int((await conn.execute(statement)).rowcount or 0)
        deleted += count
        if count < BATCH:
            return deleted
        await asyncio.sleep(0)  # let requests in between batches


async def sweep(
    engine: AsyncEngine, settings: AuthSettings, now: datetime | None = None
) -> dict[str, int]:
    """One pass; the rows deleted, by table (children deleted by cascade not counted)."""
    counts: dict[str, int] = {}
    for rule in rules(settings, now or utcnow()):
        counts[rule.name] = count = await _delete(engine, rule)
        DELETED.labels(rule.name).inc(count)
    if any(counts.values()):
        log.info(
            "housekeeping deleted %s",
            ", ".join(f"{n} {table}" for table, n in counts.items() if n),
        )
    return counts


class Housekeeper:
    """The periodic pass, in the process that holds the outbox relay (`is_leader()`)."""

    def __init__(
        self, engine: AsyncEngine, settings: AuthSettings, is_leader: Callable[[], bool]
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._is_leader = is_leader
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._settings.housekeeping_seconds > 0:
            self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        interval = self._settings.housekeeping_seconds
        await asyncio.sleep(min(FIRST_PASS_SECONDS, interval))
        while True:
            if self._is_leader():
                try:
                    await sweep(self._engine, self._settings)
                except Exception:  # the database is away, say: the next pass will do
                    log.exception("housekeeping failed; next pass in %.0f s", interval)
            await asyncio.sleep(interval)
