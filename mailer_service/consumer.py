"""The consume → render → send → record → commit loop.

Offsets are committed only after every email of a batch was accepted by the SMTP server,
moved to a retry topic or dead-lettered, so a crash redelivers instead of losing; the
delivery table makes that redelivery send nothing twice. A batch's emails go out
concurrently (up to `smtp_connections`), one recipient's in order.

A transient failure does not hold anything up: the event moves to a delay topic
(`auth.email-codes.retry.N`) with its next attempt number and a not-before time, and the
mailer pauses that retry partition until its head is due. Retries live in Kafka, so they
survive a restart and any group member can pick them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from common.events import (
    DELIVERY_STATUS_TOPIC,
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    EMAIL_CODES_TOPICS_PATTERN,
    REQUEST_ID_HEADER,
    DeliveryStatus,
    DeliveryStatusEvent,
    EmailCodeEvent,
    retry_topic,
    utcnow,
)
from common.kafka import KafkaSettings, ensure_topics, make_producer
from common.logs import request_id
from mailer_service.config import MailerSettings
from mailer_service.history import History, Outcome
from mailer_service.smtp import SendError, SmtpPool
from mailer_service.templates import render

log = logging.getLogger(__name__)

MAILS = Counter("mailer_emails_total", "Emails by outcome", ["outcome"])
LAG = Gauge("mailer_consumer_lag", "Records behind the partition's end", ["topic", "partition"])
STATUS_LOST = Counter("mailer_status_publish_failures_total", "Status events not published")

ATTEMPT_HEADER, NOT_BEFORE_HEADER, REASON_HEADER = "attempt", "not-before", "reason"
OWN_HEADERS = {ATTEMPT_HEADER, NOT_BEFORE_HEADER, REASON_HEADER, "failed_at"}


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


@dataclass(frozen=True)
class Work:
    record: ConsumerRecord
    event: EmailCodeEvent
    attempt: int
    first_seen: bool = False


class Mailer:
    def __init__(
        self,
        settings: MailerSettings,
        kafka: KafkaSettings,
        history: History,
        smtp: SmtpPool,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._history = history
        self._smtp = smtp
        delays = settings.retry_delays_seconds
        self._topics = [EMAIL_CODES_TOPIC, *(retry_topic(tier) for tier in range(len(delays)))]
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        # Held from a send's start until its outcome is committed, so at most this many
        # emails can be accepted by SMTP but unrecorded when a crash hits (the duplicates).
        self._slots = asyncio.Semaphore(settings.smtp_connections)
        self._status_pending: list[tuple[bytes, bytes]] = []
        self._partitioner = DefaultPartitioner()
        self._next_lag_check = 0.0
        self.running = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailer-consumer")

    async def stop(self) -> None:
        """Let in-flight sends finish and commit, then leave the group."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self._settings.smtp_timeout_seconds + 5)
            except TimeoutError:
                log.warning("in-flight sends did not finish in time; they will be redelivered")
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # aiokafka's stop() re-raises its fetch task's cancellation when the broker
                # is already gone; uncommitted records are redelivered, so nothing is lost.
                log.warning("consumer stopped without reaching the broker")
            self._task = None

    async def _connect(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._kafka.bootstrap_servers,
                group_id=self._settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self._settings.batch_size,
                # How long the broker may hold a fetch when there is nothing new: bounds the
                # wait of the first email after a quiet spell (Kafka's default is 500 ms).
                fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            )
            producer = make_producer(self._kafka)
            try:
                await ensure_topics(
                    self._kafka, *self._topics, EMAIL_CODES_DLQ_TOPIC, DELIVERY_STATUS_TOPIC
                )
                await producer.start()
                # By pattern, not by list: records waiting in a tier that a smaller
                # MAILER_RETRY_DELAYS_SECONDS no longer names are still consumed.
                consumer.subscribe(pattern=EMAIL_CODES_TOPICS_PATTERN)
                await consumer.start()
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                await producer.stop()
                log.warning("broker unreachable (%s); retrying in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._consumer, self._producer = consumer, producer
            return

    async def _run(self) -> None:
        await self._connect()
        if self._consumer is None:
            return
        self.running = True
        log.info(
            "mailer consuming %s as group %r", EMAIL_CODES_TOPICS_PATTERN, self._settings.group_id
        )
        backoff = 0.2
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(
                    timeout_ms=500, max_records=self._settings.batch_size
                )
                await self._measure_lag()
                if not batch:
                    continue
                try:
                    await self._process(batch)
                    backoff = 0.2
                except Exception:
                    # Nothing is lost: rewind to the committed offsets and go again; what was
                    # already sent is in the delivery table and will be skipped.
                    log.exception("processing a batch failed; retrying in %.1fs", backoff)
                    MAILS.labels("batch_error").inc()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    await self._consumer.seek_to_committed()
        finally:
            self.running = False
            for timer in self._timers.values():
                timer.cancel()
            await self._consumer.stop()  # commits nothing more; leaves the group
            if self._producer is not None:
                await self._producer.stop()

    async def _process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self._consumer is not None
        now = time.time()
        offsets: dict[TopicPartition, int] = {}
        works: list[Work] = []
        for tp, records in batch.items():
            if tp.topic != EMAIL_CODES_TOPIC:
                records = self._due(tp, records, now)
            if not records:
                continue
            offsets[tp] = records[-1].offset + 1
            for record in records:
                try:
                    event = EmailCodeEvent.from_bytes(record.value)
                except ValidationError as exc:
                    reason = f"malformed event: {exc.error_count()} error(s)"
                    await self._dead_letter(record, reason)
                    continue
                works.append(Work(record, event, self._attempt_of(record)))

        # One copy per event in a batch (the furthest attempt); then skip what the delivery
        # table says is finished or already tried at this attempt.
        furthest: dict[str, Work] = {}
        for work in works:
            best = furthest.get(work.event.event_id)
            if best is None or work.attempt > best.attempt:
                furthest[work.event.event_id] = work
        seen = await self._history.seen(furthest)
        lanes: dict[str, list[Work]] = {}
        for work in works:
            known = seen.get(work.event.event_id)
            if furthest[work.event.event_id] is not work or (known and known.covers(work.attempt)):
                MAILS.labels("duplicate").inc()
                continue
            lanes.setdefault(work.event.email, []).append(
                Work(work.record, work.event, work.attempt, first_seen=known is None)
            )

        async with asyncio.TaskGroup() as group:
            for lane in lanes.values():
                group.create_task(self._deliver_in_order(lane))
        await self._flush_status()
        if not offsets:  # every record fetched was a retry not yet due
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved a partition: its new owner gets these records again and
            # skips them (same table). Not an error worth stopping for.
            log.warning("commit refused after a rebalance: %s", exc)

    def _attempt_of(self, record: ConsumerRecord) -> int:
        try:
            attempt = int(header(record, ATTEMPT_HEADER) or 1)
        except ValueError:
            attempt = 1
        return min(max(attempt, 1), self._settings.max_attempts)

    def _due(
        self, tp: TopicPartition, records: list[ConsumerRecord], now: float
    ) -> list[ConsumerRecord]:
        """The records whose time has come; the partition waits, paused, for the rest."""
        for i, record in enumerate(records):
            try:
                not_before = float(header(record, NOT_BEFORE_HEADER) or 0) / 1000
            except ValueError:
                not_before = 0.0
            if not_before > now:
                self._hold(tp, record.offset, not_before - now)
                return records[:i]
        return records

    def _hold(self, tp: TopicPartition, offset: int, delay: float) -> None:
        assert self._consumer is not None
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        if timer := self._timers.pop(tp, None):
            timer.cancel()
        self._timers[tp] = asyncio.get_running_loop().call_later(delay, self._release, tp)

    def _release(self, tp: TopicPartition) -> None:
        self._timers.pop(tp, None)
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.resume(tp)

    async def _deliver_in_order(self, lane: list[Work]) -> None:
        for work in lane:
            await self._deliver(work)

    async def _deliver(self, work: Work) -> None:
        event, attempt = work.event, work.attempt
        request_id.set(header(work.record, REQUEST_ID_HEADER))
        if work.first_seen and attempt == 1:
            self._status(event, DeliveryStatus.QUEUED, attempt)
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
            await self._dead_letter(work.record, failure.reason)
            await self._finish(event, DeliveryStatus.FAILED, attempt, failure.reason)
            return
        delay = await self._retry_later(work, failure.reason)
        log.info("transient failure for %s (%s); retry in %.2fs", event, failure, delay)
        MAILS.labels("retried").inc()
        await self._finish(event, DeliveryStatus.RETRYING, attempt, failure.reason)

    async def _finish(
        self, event: EmailCodeEvent, status: DeliveryStatus, attempt: int, error: str | None
    ) -> None:
        """Record an attempt's outcome (before the offset commit), then announce it."""
        await self._history.record(
            Outcome(
                event_id=event.event_id,
                recipient=event.email,
                type=event.type.value,
                status=status,
                attempt=attempt,
                queued_at=event.occurred_at,
                error=error,
            )
        )
        if status is DeliveryStatus.FAILED:
            MAILS.labels("failed").inc()
        self._status(event, status, attempt, error)

    async def _retry_later(self, work: Work, reason: str) -> float:
        """Move the event to its delay tier (acknowledged by the broker); the delay chosen."""
        assert self._producer is not None
        delays = self._settings.retry_delays_seconds
        tier = min(work.attempt - 1, len(delays) - 1)
        delay = delays[tier] * random.uniform(0.8, 1.0)
        headers = [(k, v) for k, v in work.record.headers or () if k not in OWN_HEADERS]
        headers += [
            (ATTEMPT_HEADER, str(work.attempt + 1).encode()),
            (NOT_BEFORE_HEADER, str(int((time.time() + delay) * 1000)).encode()),
            (REASON_HEADER, reason.encode()[:1000]),
        ]
        await self._producer.send_and_wait(
            retry_topic(tier), work.record.value, key=work.record.key, headers=headers
        )
        return delay

    def _status(
        self,
        event: EmailCodeEvent,
        status: DeliveryStatus,
        attempt: int,
        reason: str | None = None,
    ) -> None:
        value = DeliveryStatusEvent(
            event_id=event.event_id,
            email=event.email,
            type=event.type.value,
            status=status,
            attempt=attempt,
            reason=reason,
        ).to_bytes()
        self._status_pending.append((event.key, value))

    async def _flush_status(self) -> None:
        """Publish the batch's status events, one record batch per partition (per-message
        `send()` cost 0.5 ms of CPU an email). They are announcements, the table is the
        record: a failed publish is counted and logged and does not hold up the mail."""
        assert self._producer is not None
        pending, self._status_pending = self._status_pending, []
        if not pending:
            return
        try:
            partitions = sorted(await self._producer.partitions_for(DELIVERY_STATUS_TOPIC))
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in pending:  # Kafka's key hashing: one recipient, one partition
                partition = self._partitioner(key, partitions, partitions)
                by_partition.setdefault(partition, []).append((key, value))
            sent = []
            for partition, records in by_partition.items():
                batch = self._producer.create_batch()
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:  # full
                        sent.append(await self._send_batch(batch, partition))
                        batch = self._producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                sent.append(await self._send_batch(batch, partition))
            await asyncio.gather(*sent)
        except (KafkaError, OSError) as exc:
            STATUS_LOST.inc(len(pending))
            log.warning("%d delivery-status event(s) not published: %s", len(pending), exc)

    async def _send_batch(self, batch: BatchBuilder, partition: int) -> asyncio.Future[object]:
        assert self._producer is not None
        return await self._producer.send_batch(batch, DELIVERY_STATUS_TOPIC, partition=partition)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        assert self._producer is not None
        MAILS.labels("dead_lettered").inc()
        headers = [(k, v) for k, v in record.headers or () if k not in OWN_HEADERS]
        headers += [
            (REASON_HEADER, reason.encode()[:1000]),
            ("failed_at", utcnow().isoformat().encode()),
        ]
        await self._producer.send_and_wait(
            EMAIL_CODES_DLQ_TOPIC, record.value, key=record.key, headers=headers
        )
        log.error(
            "dead-lettered offset %d of %s-%d: %s",
            record.offset,
            record.topic,
            record.partition,
            json.dumps(reason),
        )

    async def _measure_lag(self) -> None:
        """`mailer_consumer_lag`, per assigned partition, at most once a second."""
        assert self._consumer is not None
        if time.monotonic() < self._next_lag_check:
            return
        self._next_lag_check = time.monotonic() + 1.0
        LAG.clear()
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await asyncio.wait_for(self._consumer.position(tp), 1.0)
            except (KafkaError, IllegalStateError, TimeoutError):
                continue
            LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
