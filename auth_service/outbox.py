"""The transactional outbox and its relay: no accepted request's email is ever lost.

Rows are written in the same transaction as the change they announce, so an accepted
sign-up has its email on disk even while the broker is down. One relay per database (see
`leader.py`) publishes rows in id order with acks=all and marks them published only once
the broker acknowledged them. An email row stays, payload and all, until the mailer
reports it finished (`acks.py`): when the broker comes back empty, everything not yet
finished is published again, in order; so is an email not heard of for
AUTH_OUTBOX_REPUBLISH_SECONDS. The mailer's dedupe by `event_id` makes that safe. An email
still unconfirmed after AUTH_OUTBOX_GIVE_UP_SECONDS (its code long expired) is closed as
undelivered: logged as an error and counted, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from sqlalchemy import case, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from auth_service.acks import AckReader
from auth_service.config import AuthSettings
from auth_service.leader import RelayLock
from auth_service.models import OutboxEvent
from common.clock import utcnow
from common.debug import dump_tasks
from common.events import (
    EMAIL_CODES_TOPIC,
    REPUBLISH_HEADER,
    REQUEST_ID_HEADER,
    SESSION_EVENTS_TOPIC,
    USER_EVENTS_TOPIC,
)
from common.kafka import (
    Backoff,
    BrokerReset,
    KafkaSettings,
    being_cancelled,
    changed_topics,
    close_quietly,
    ensure_topics,
    make_producer,
    missing_topics,
    recreate_topics,
    topic_partitions,
    until_connected,
)
from common.logs import request_id
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BATCH = 200
LEADER_RETRY_SECONDS = 2.0  # a relay without the lock tries again this often
CHECK_SECONDS = 5.0  # lock still held? anything overdue? the gauges
# The relay's loop beats at least every ~10 s, however unwell the broker; silent this
# long, it is stuck on a client call and is restarted (its tasks' stacks are logged).
STUCK_SECONDS = 60.0

# Topics whose events stay until the mailer acknowledges them end to end.
ACKNOWLEDGED_TOPICS = {EMAIL_CODES_TOPIC}
# Topics the relay writes, hence creates.
RELAY_TOPICS = (EMAIL_CODES_TOPIC, USER_EVENTS_TOPIC, SESSION_EVENTS_TOPIC)

PUBLISHED = Counter("auth_outbox_published_total", "Outbox events published", ["kind"])
UNDELIVERED = Counter(
    "auth_outbox_undelivered_total", "Emails closed unconfirmed after AUTH_OUTBOX_GIVE_UP_SECONDS"
)
# With several workers (common/metrics.py): the relaying worker's counts; how many relay.
PENDING = Gauge(
    "auth_outbox_pending", "Outbox events by state", ["state"], multiprocess_mode="livemax"
)
LEADER = Gauge(
    "auth_outbox_relay_leader",
    "1 while this process relays the outbox",
    multiprocess_mode="livesum",
)
STUCK = Counter("auth_outbox_relay_restarts_total", "Relay restarted after being stuck")
FAILED = Counter("auth_outbox_relay_failures_total", "Relay restarted after an unexpected error")


CODES_ISSUED = Counter("auth_codes_issued_total", "One-time codes sent out", ["type"])


def add_event(session: AsyncSession, topic: str, key: str, event_id: str, payload: str) -> None:
    """Queue one event in the caller's transaction: published once that commits."""
    session.add(
        OutboxEvent(
            topic=topic,
            key=key,
            event_id=event_id,
            payload=payload,
            request_id=request_id.get(),
        )
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        kafka: KafkaSettings,
        settings: AuthSettings,
    ) -> None:
        self._sessions = sessions
        self._kafka = kafka
        self._settings = settings
        self._lock = RelayLock(engine)
        self._acks = AckReader(sessions, kafka)
        # SQLite has no NOTIFY: with other worker processes writing, the holder polls often.
        shared_sqlite = engine.dialect.name == "sqlite" and settings.workers > 1
        self._poll_seconds = 0.05 if shared_sqlite else settings.outbox_poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wakers: set[asyncio.Task[None]] = set()
        self._producer: AIOKafkaProducer | None = None
        self._known: dict[str, int] = {}  # partitions of our topics when we connected
        self._heartbeat = time.monotonic()
        self.leader = False

    def notify(self) -> None:
        """Called after a transaction that added events commits: publish now, not at the
        next poll, whichever process holds the relay."""
        self._wake.set()
        if not self.leader:
            task = asyncio.create_task(self._wake_leader())
            self._wakers.add(task)
            task.add_done_callback(self._wakers.discard)

    async def _wake_leader(self) -> None:
        try:
            await self._lock.wake()
        except Exception as exc:  # the holder polls anyway: a lost wake-up only delays
            log.debug("could not wake the relay: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        standing_by = False
        while not self._stopping.is_set():
            try:
                acquired = await self._lock.acquire(self._wake.set)
            except Exception as exc:  # the database is away: wait it out, never die
                log.warning("could not take the outbox relay lock (%s); retrying", exc)
                acquired = False
            if not acquired:
                if not standing_by:
                    log.info("another process holds the outbox relay; standing by")
                    standing_by = True
                await asyncio.sleep(LEADER_RETRY_SECONDS)
                continue
            standing_by = False
            self.leader = True
            LEADER.set(1)
            log.info("this process relays the outbox")
            failed = False
            try:
                await self._supervised(self._lead())
            except asyncio.CancelledError:
                if self._stopping.is_set() or being_cancelled():
                    raise
                # Not a stop: a CancelledError from inside, such as a client library's
                # future cancelled under us. A failure like any other (below).
                log.exception("the outbox relay was cancelled from inside; starting it again")
                FAILED.inc()
                failed = True
            except Exception:
                # Whatever went wrong, the relay must not die with the lock held: that
                # would stall every instance's email. Step down, log it, try again.
                log.exception("the outbox relay failed; starting it again")
                FAILED.inc()
                failed = True
            finally:
                self.leader = False
                LEADER.set(0)
                for state in ("unpublished", "unconfirmed"):  # the next leader's now
                    PENDING.labels(state).set(0)
                try:
                    await self._disconnect()
                finally:
                    await self._lock.release()
            if failed:
                await asyncio.sleep(LEADER_RETRY_SECONDS)

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    async def _supervised(self, lead: Coroutine[Any, Any, None]) -> None:
        """Run the relay; restart it if it stops beating for STUCK_SECONDS."""
        self._beat()
        task = asyncio.create_task(lead, name="outbox-lead")
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=CHECK_SECONDS)
                if not task.done() and time.monotonic() - self._heartbeat > STUCK_SECONDS:
                    log.error(
                        "the outbox relay has been stuck for %.0fs; restarting it", STUCK_SECONDS
                    )
                    STUCK.inc()
                    dump_tasks()
                    await cancel_and_wait(task)
                    return
            task.result()
        finally:
            await cancel_and_wait(task)

    async def _connect(self) -> AIOKafkaProducer:
        # A sign that the broker lost what was published is acted on before what would
        # hide it (making the topics again), and in the database: a _connect tried again
        # after a failure, here or in another instance, would find nothing amiss.
        if await missing_topics(self._kafka, EMAIL_CODES_TOPIC):
            await self._published_lost()  # or this is the first start ever: a no-op
        producer = make_producer(self._kafka)
        try:
            created = await ensure_topics(self._kafka, *RELAY_TOPICS)
            await producer.start()
            current = await topic_partitions(producer, *RELAY_TOPICS)
            ours = self._kafka.topic_partitions
            if self._known and (stale := {t for t, n in current.items() if n != self._known[t]}):
                # Re-created by the restarted broker when a client named it: another
                # partition count, maybe stray records. Ours to remake.
                if stale & ACKNOWLEDGED_TOPICS:
                    await self._published_lost()
                await recreate_topics(self._kafka, *stale)
                # This producer still sees the topics as they were: it would send to
                # partitions the new ones lack, which Tansu acknowledges and drops.
                await producer.stop()
                producer = make_producer(self._kafka)
                await producer.start()
                current = await topic_partitions(producer, *RELAY_TOPICS)
            elif not self._known and current.get(EMAIL_CODES_TOPIC, ours) != ours:
                # Nothing to compare with (a first term, say taking over from an instance
                # that went away). Another count than ours may be a restarted broker's own
                # (Tansu makes a topic a client names) or an operator's choice on a broker
                # that keeps everything: publishing again is right for the one and costs
                # the other only duplicates the mailer skips.
                await self._republish(everything=True)
            await self._acks.start()
        except BaseException:
            await producer.stop()
            await self._acks.stop()
            raise
        if created:
            log.info("created %s", sorted(created))
        self._known = current
        return producer

    async def _published_lost(self) -> None:
        """What was published is gone: every unconfirmed email is to be published again,
        and the mailer's reports are read from the start of their new topic."""
        await self._republish(everything=True)
        self._acks.broker_reset()

    async def _disconnect(self) -> None:
        await self._acks.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await close_quietly(producer, "the outbox producer")

    async def _lead(self) -> None:
        """Publish until the lock is lost or the relay stops."""
        self._producer = await until_connected(
            self._connect, "outbox relay", self._stopping, self._beat
        )
        if self._producer is None:
            return
        acks = asyncio.create_task(self._acks.run(self._stopping), name="outbox-acks")
        backoff = Backoff()
        next_check = 0.0
        try:
            while not self._stopping.is_set():
                self._beat()
                try:
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + CHECK_SECONDS
                        if not await self._lock.still_held():
                            return
                        await self._sweep()
                        # An idle relay notices an empty restart too.
                        await self._check()
                    sent = await self.drain_once()
                    backoff.reset()
                except BrokerReset as exc:
                    log.warning("the broker lost %s (restarted?); publishing again", exc)
                    await cancel_and_wait(acks)
                    await self._disconnect()
                    # Before reconnecting makes the topics again (see _connect).
                    await self._published_lost()
                    self._producer = await until_connected(
                        self._connect, "outbox relay", self._stopping, self._beat
                    )
                    if self._producer is None:
                        return
                    acks = asyncio.create_task(self._acks.run(self._stopping), name="outbox-acks")
                    continue
                except (KafkaError, OSError) as exc:
                    log.warning(
                        "publishing the outbox failed (%s); retrying in %.1fs", exc, backoff.delay
                    )
                    await backoff.wait(self._stopping)
                    continue
                if sent == BATCH:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
                self._wake.clear()
        finally:
            await cancel_and_wait(acks)

    async def drain_once(self) -> int:
        """Publish up to one batch of pending rows in order; returns how many were sent."""
        assert self._producer is not None
        # Clear before reading: a notify() that lands while we publish triggers another pass.
        self._wake.clear()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        OutboxEvent.id,
                        OutboxEvent.topic,
                        OutboxEvent.key,
                        OutboxEvent.payload,
                        OutboxEvent.request_id,
                        OutboxEvent.publishes,
                    )
                    .where(OutboxEvent.sent_at.is_(None))
                    .order_by(OutboxEvent.id)
                    .limit(BATCH)
                )
            ).all()
        if not rows:
            return 0
        # Nothing is queued unless the topics are as we left them: a producer whose
        # metadata predates a restart would send to a broker that acknowledges records for
        # topics it does not have.
        await self._check()
        # Queue the whole batch, then await acks: the producer keeps per-partition order.
        futures = []
        for row_id, topic, key, payload, rid, publishes in rows:
            if payload is None:  # nothing to send; only a hand-edited row can look like this
                log.error("outbox row %d has no payload; skipping it", row_id)
                continue
            headers = [(REQUEST_ID_HEADER, rid.encode())] if rid else []
            if publishes:
                headers.append((REPUBLISH_HEADER, str(publishes).encode()))
            futures.append(
                await self._producer.send(
                    topic, payload.encode(), key=key.encode(), headers=headers or None
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)  # all settled
        # Acks from a broker that restarted meanwhile are for topics it does not have.
        await self._check()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self._mark_published([row.id for row in rows])
        republished = sum(1 for row in rows if row.publishes)
        PUBLISHED.labels("first").inc(len(rows) - republished)
        PUBLISHED.labels("again").inc(republished)
        log.info("published %d outbox event(s)", len(rows))
        return len(rows)

    async def _check(self) -> None:
        """BrokerReset if our topics are gone or were re-created (the broker restarted)."""
        assert self._producer is not None
        if changed := await changed_topics(self._producer, self._known):
            raise BrokerReset(", ".join(sorted(changed)))

    async def _mark_published(self, ids: list[int]) -> None:
        acknowledged = OutboxEvent.topic.in_(ACKNOWLEDGED_TOPICS)
        now = utcnow()
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids))
                .values(
                    sent_at=now,
                    publishes=OutboxEvent.publishes + 1,
                    # Emails wait for the mailer's word, unless it came already (a fast
                    # mailer can finish before the acks are counted here); other events
                    # are done once the broker has them.
                    acked_at=case((acknowledged, OutboxEvent.acked_at), else_=now),
                    payload=case((acknowledged, OutboxEvent.payload), else_=None),
                )
            )

    async def _republish(self, *, everything: bool = False) -> int:
        """Mark unacknowledged emails for publishing again: all of them after a broker
        reset, else those not heard of for AUTH_OUTBOX_REPUBLISH_SECONDS."""
        quiet_since = utcnow() - timedelta(seconds=self._settings.outbox_republish_seconds)
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.topic.in_(ACKNOWLEDGED_TOPICS),
                    OutboxEvent.acked_at.is_(None),
                    OutboxEvent.sent_at.is_not(None),
                    OutboxEvent.payload.is_not(None),
                    true() if everything else OutboxEvent.sent_at < quiet_since,
                )
                .values(sent_at=None)
            )
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            log.warning("publishing %d unconfirmed email(s) again", count)
            self._wake.set()
        return count

    async def _sweep(self) -> None:
        """Now and then: republish the overdue, close the hopeless, update the gauges."""
        await self._republish()
        cutoff = utcnow() - timedelta(seconds=self._settings.outbox_give_up_seconds)
        unconfirmed = (
            OutboxEvent.topic.in_(ACKNOWLEDGED_TOPICS),
            OutboxEvent.acked_at.is_(None),
            OutboxEvent.created_at < cutoff,
        )
        async with self._sessions.begin() as session:
            closed = (
                await session.scalars(
                    update(OutboxEvent)
                    .where(*unconfirmed)
                    .values(acked_at=utcnow(), payload=None)
                    .returning(OutboxEvent.event_id)
                )
            ).all()
            unsent = await session.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
            )
            unacked = await session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.acked_at.is_(None), OutboxEvent.sent_at.is_not(None))
            )
        for event_id in closed:
            log.error("email %s never confirmed by the mailer; closed as undelivered", event_id)
        UNDELIVERED.inc(len(closed))
        PENDING.labels("unpublished").set(unsent or 0)
        PENDING.labels("unconfirmed").set(unacked or 0)
