"""One batch of records turned into emails.

Records are parsed (a malformed one is dead-lettered), one copy per event is kept (the
furthest attempt), and whatever the delivery table says is finished, or already tried at
this attempt, is skipped: that is what makes a redelivery after a crash or a rebalance
send nothing twice. A finished email met again has its final status announced again: auth
publishes an email again when it has not heard that it finished (the report may have
been lost with a broker), and that announcement is what it waits for. A republished
email whose retry has been due for a while resumes at its next attempt: its record in
the delay tier was lost with the broker.

The rest go out concurrently, one recipient's in order. Each outcome is committed to the
table right after the SMTP answer and before the batch's offsets, and a send holds its
SMTP connection until then, so a crash can repeat at most one email per connection.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from typing import cast

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from common.clock import utcnow
from common.events import REPUBLISH_HEADER, REQUEST_ID_HEADER, DeliveryStatus, EmailCodeEvent
from common.kafka import Backoff
from common.logs import request_id
from mailer_service.config import MailerSettings
from mailer_service.history import History, Outcome, Seen
from mailer_service.metrics import MAILS
from mailer_service.retries import Redirector, attempt_of, header
from mailer_service.smtp import SendError, SmtpPool
from mailer_service.status import StatusAnnouncer
from mailer_service.templates import render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    record: ConsumerRecord
    event: EmailCodeEvent
    attempt: int
    first_seen: bool = False


class Dispatcher:
    def __init__(
        self,
        settings: MailerSettings,
        history: History,
        smtp: SmtpPool,
        redirector: Redirector,
        announcer: StatusAnnouncer,
    ) -> None:
        self._settings = settings
        self._history = history
        self._smtp = smtp
        self._redirector = redirector
        self._announcer = announcer
        # Held from a send's start until its outcome is committed, so at most this many
        # emails can be accepted by SMTP but unrecorded when a crash hits (the duplicates).
        self._slots = asyncio.Semaphore(settings.smtp_connections)

    async def dispatch(self, records: list[ConsumerRecord]) -> None:
        """Send, record and announce every record's email; returns when all are settled."""
        lanes = await self._plan(records)
        async with asyncio.TaskGroup() as group:
            for lane in lanes:
                group.create_task(self._deliver_in_order(lane))
        await self._announcer.flush()

    async def _plan(self, records: list[ConsumerRecord]) -> list[list[Work]]:
        works: list[Work] = []
        for record in records:
            try:
                event = EmailCodeEvent.from_bytes(record.value)
            except ValidationError as exc:
                await self._redirector.dead_letter(
                    record, f"malformed event: {exc.error_count()} error(s)"
                )
                continue
            works.append(Work(record, event, attempt_of(record, self._settings.max_attempts)))

        furthest: dict[str, Work] = {}
        for work in works:
            best = furthest.get(work.event.event_id)
            if best is None or work.attempt > best.attempt:
                furthest[work.event.event_id] = work
        seen = await self._history.seen(furthest)
        lanes: dict[str, list[Work]] = {}
        for work in works:
            known = seen.get(work.event.event_id)
            if furthest[work.event.event_id] is not work:
                MAILS.labels("duplicate").inc()
                continue
            if known is not None and self._lost_retry(work, known):
                work = Work(work.record, work.event, known.attempts + 1)
            elif known is not None and known.covers(work.attempt):
                MAILS.labels("duplicate").inc()
                if known.finished:
                    status = DeliveryStatus(known.status)
                    self._announcer.add(work.event, status, known.attempts)
                continue
            lanes.setdefault(work.event.email, []).append(
                Work(work.record, work.event, work.attempt, first_seen=known is None)
            )
        return list(lanes.values())

    def _lost_retry(self, work: Work, known: Seen) -> bool:
        """A republished email still `retrying` long after its retry was due: the record
        in the delay tier is gone (a broker that restarted empty)."""
        if known.finished or header(work.record, REPUBLISH_HEADER) is None:
            return False
        overdue = 2 * max(self._settings.retry_delays_seconds) + 5
        return (utcnow() - known.updated_at).total_seconds() > overdue

    async def _deliver_in_order(self, lane: list[Work]) -> None:
        for work in lane:
            await self._deliver(work)

    async def _deliver(self, work: Work) -> None:
        event, attempt = work.event, work.attempt
        request_id.set(header(work.record, REQUEST_ID_HEADER))
        if work.first_seen and attempt == 1:
            self._announcer.add(event, DeliveryStatus.QUEUED, attempt)
        message = render(event, sender=self._settings.sender, product=self._settings.product_name)
        async with self._slots:
            try:
                await self._smtp.send(message)
            except SendError as exc:
                failure = exc
            else:
                MAILS.labels("sent").inc()
                await self._finish(event, DeliveryStatus.SENT, attempt, None)
                log.info("sent %s (%s, attempt %d)", event, event.type.value, attempt)
                return
        if failure.permanent or attempt >= self._settings.max_attempts:
            log.warning("giving up on %s after %d attempt(s): %s", event, attempt, failure)
            await self._redirector.dead_letter(work.record, failure.reason)
            MAILS.labels("failed").inc()
            await self._finish(event, DeliveryStatus.FAILED, attempt, failure.reason)
            return
        delay = await self._redirector.retry_later(work.record, attempt, failure.reason)
        log.info("transient failure for %s (%s); retry in %.2fs", event, failure, delay)
        await self._finish(event, DeliveryStatus.RETRYING, attempt, failure.reason)

    async def _finish(
        self, event: EmailCodeEvent, status: DeliveryStatus, attempt: int, error: str | None
    ) -> None:
        """Record an attempt's outcome (before the offset commit), then announce it. A
        database that cannot take it is tried again until it does: the email went out, and
        failing the batch would send it again, and again."""
        outcome = Outcome(
            event_id=event.event_id,
            recipient=event.email,
            type=event.type.value,
            status=status,
            attempt=attempt,
            queued_at=event.occurred_at,
            error=error,
        )
        backoff = Backoff(first=0.5, most=30.0)
        while True:
            try:
                await self._history.record(outcome)
                break
            except Exception as exc:
                MAILS.labels("record_error").inc()
                if not _may_pass(exc):
                    # Not the database's state but this outcome's: no try would store it.
                    # The batch goes on (its offsets are committed, so it is not sent
                    # again from Kafka); only auth republishing it could repeat it.
                    log.error("the outcome of %s (%s) cannot be stored: %r", event, status, exc)
                    break
                log.warning(
                    "recording %s (%s) failed: %r; again in %.1fs",
                    event,
                    status.value,
                    exc,
                    backoff.delay,
                )
                await backoff.wait()
        self._announcer.add(event, status, attempt, error)


def _may_pass(exc: Exception) -> bool:
    """A failed outcome write that may succeed later (the database locked, full, read-only,
    unreachable), as against one about this outcome's values, which never will."""
    if isinstance(exc, IntegrityError | DataError | sqlite3.IntegrityError | sqlite3.DataError):
        return False
    if isinstance(exc, DBAPIError) and str(getattr(exc.orig, "sqlstate", "")).startswith(
        ("22", "23")
    ):
        # PostgreSQL's data exceptions and integrity violations, which SQLAlchemy's asyncpg
        # adapter does not always raise as DataError (a NUL in a text, a number too big).
        return False
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError) and exc.orig:
        exc = cast(Exception, exc.orig)  # a value SQLAlchemy could not convert
    return not isinstance(exc, ValueError | TypeError | OverflowError)
