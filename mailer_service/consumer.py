"""The consume → render → send → record → commit loop.

Offsets are committed only after the SMTP server accepted the message (or after it was
dead-lettered), so a crash redelivers instead of losing; the processed-events table makes
that redelivery send nothing twice. Partitions are processed concurrently, each in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events import EMAIL_CODES_DLQ_TOPIC, EMAIL_CODES_TOPIC, EmailCodeEvent, utcnow
from common.kafka import KafkaSettings, ensure_topics, make_producer
from mailer_service.config import MailerSettings
from mailer_service.models import ProcessedEvent
from mailer_service.smtp import SendError, SmtpPool
from mailer_service.templates import render

log = logging.getLogger(__name__)

MAILS = Counter("mailer_emails_total", "Emails by outcome", ["outcome"])


class Mailer:
    def __init__(
        self,
        settings: MailerSettings,
        kafka: KafkaSettings,
        sessions: async_sessionmaker[AsyncSession],
        smtp: SmtpPool,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._sessions = sessions
        self._smtp = smtp
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
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
                EMAIL_CODES_TOPIC,
                bootstrap_servers=self._kafka.bootstrap_servers,
                group_id=self._settings.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=200,
            )
            producer = make_producer(self._kafka)
            try:
                await ensure_topics(self._kafka, EMAIL_CODES_TOPIC, EMAIL_CODES_DLQ_TOPIC)
                await producer.start()
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
        log.info("mailer consuming %s as group %r", EMAIL_CODES_TOPIC, self._settings.group_id)
        backoff = 0.2
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=500, max_records=200)
                if not batch:
                    continue
                try:
                    await asyncio.gather(
                        *(self._process_partition(tp, records) for tp, records in batch.items())
                    )
                    backoff = 0.2
                except Exception:
                    # Nothing is lost: rewind to the committed offsets and go again; what was
                    # already sent is in the processed-events table and will be skipped.
                    log.exception("processing a batch failed; retrying in %.1fs", backoff)
                    MAILS.labels("batch_error").inc()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    await self._consumer.seek_to_committed()
        finally:
            self.running = False
            await self._consumer.stop()  # commits nothing more; leaves the group
            if self._producer is not None:
                await self._producer.stop()

    async def _process_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        assert self._consumer is not None
        for record in records:
            await self.handle(record)
        # Handled records are in the processed-events table, so one commit per batch is
        # enough: a crash before it redelivers them and they are skipped, not re-sent.
        try:
            await self._consumer.commit({tp: records[-1].offset + 1})
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved the partition: its new owner gets these records again and
            # skips them (same table). Not an error worth stopping for.
            log.warning("commit for %s refused after a rebalance: %s", tp, exc)

    async def handle(self, record: ConsumerRecord) -> None:
        try:
            event = EmailCodeEvent.from_bytes(record.value)
        except ValidationError as exc:
            await self._dead_letter(record, f"malformed event: {exc.error_count()} error(s)")
            return
        async with self._sessions() as session:
            if await session.get(ProcessedEvent, event.event_id) is not None:
                MAILS.labels("duplicate").inc()
                return
        message = render(event, sender=self._settings.sender, product=self._settings.product_name)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._smtp.send(message)
            except SendError as exc:
                if exc.permanent or attempt >= self._settings.max_attempts:
                    log.warning("giving up on %s after %d attempt(s): %s", event, attempt, exc)
                    await self._record(event, "failed", attempt, exc.reason)
                    await self._dead_letter(record, exc.reason)
                    return
                MAILS.labels("retried").inc()
                delay = min(
                    self._settings.retry_max_seconds,
                    self._settings.retry_base_seconds * 2 ** (attempt - 1),
                ) * random.uniform(0.5, 1.0)
                log.info("transient failure for %s (%s); retry in %.2fs", event, exc, delay)
                await asyncio.sleep(delay)
                continue
            await self._record(event, "sent", attempt, None)
            MAILS.labels("sent").inc()
            log.info("sent %s (%s)", event, event.type.value)
            return

    async def _record(
        self, event: EmailCodeEvent, status: str, attempts: int, error: str | None
    ) -> None:
        try:
            async with self._sessions.begin() as session:
                session.add(
                    ProcessedEvent(
                        event_id=event.event_id,
                        status=status,
                        recipient=event.email,
                        type=event.type.value,
                        attempts=attempts,
                        error=error,
                        finished_at=utcnow(),
                    )
                )
        except IntegrityError:
            # Another member got the same event during a rebalance and recorded it first.
            log.info("%s was already recorded", event)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        assert self._producer is not None
        MAILS.labels("dead_lettered").inc()
        headers = [("reason", reason.encode()[:1000]), ("failed_at", utcnow().isoformat().encode())]
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
