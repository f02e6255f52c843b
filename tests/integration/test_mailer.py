"""The mailer's consume → send → record → commit loop on the real broker and a real SMTP
server: transient failures retried, permanent ones dead-lettered, duplicates suppressed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from common.db import create_schema, make_engine, make_sessionmaker
from common.events import (
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    EmailCodeEvent,
    EmailEventType,
)
from common.kafka import KafkaSettings, ensure_topics, make_producer
from mailer_service.config import MailerSettings
from mailer_service.consumer import Mailer
from mailer_service.models import Base, ProcessedEvent
from mailer_service.smtp import SmtpPool
from tests.support import RecordingHandler, start_smtp, unique_email


class FlakyHandler(RecordingHandler):
    """Answers 451 to an address's first `failures[address]` attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, int] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        left = self.failures.get(address.lower(), 0)
        if left:
            self.failures[address.lower()] = left - 1
            return "451 4.3.0 greylisted, try again"
        return await super().handle_RCPT(server, session, envelope, address, options)


class Harness:
    def __init__(
        self, kafka: KafkaSettings, mailer: Mailer, handler: FlakyHandler, sessions: Any
    ) -> None:
        self.kafka = kafka
        self.mailer = mailer
        self.smtp = handler
        self.sessions = sessions

    async def publish(self, *values: bytes | EmailCodeEvent) -> None:
        producer = make_producer(self.kafka)
        await producer.start()
        try:
            for value in values:
                if isinstance(value, EmailCodeEvent):
                    await producer.send_and_wait(EMAIL_CODES_TOPIC, value.to_bytes(), key=value.key)
                else:
                    await producer.send_and_wait(EMAIL_CODES_TOPIC, value, key=b"junk")
        finally:
            await producer.stop()

    async def record(self, event_id: str) -> ProcessedEvent | None:
        for _ in range(200):
            async with self.sessions() as session:
                row = await session.scalar(
                    select(ProcessedEvent).where(ProcessedEvent.event_id == event_id)
                )
            if row is not None:
                return row
            await asyncio.sleep(0.05)
        return None


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    tmp_path = tmp_path_factory.mktemp("mailer")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, EMAIL_CODES_TOPIC, EMAIL_CODES_DLQ_TOPIC)
    handler = FlakyHandler()
    controller = start_smtp(handler)
    settings = MailerSettings(
        smtp_port=controller.port,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
        group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
        max_attempts=4,
        retry_base_seconds=0.05,
    )
    engine = make_engine(settings.database_url)
    await create_schema(engine, Base)
    sessions = make_sessionmaker(engine)
    smtp = SmtpPool(settings)
    mailer = Mailer(settings, kafka, sessions, smtp)
    mailer.start()
    try:
        yield Harness(kafka, mailer, handler, sessions)
    finally:
        await mailer.stop()
        await smtp.close()
        await engine.dispose()
        controller.stop()


def event(email: str, **kwargs: Any) -> EmailCodeEvent:
    return EmailCodeEvent(
        type=EmailEventType.EMAIL_VERIFICATION, email=email, code="424242", **kwargs
    )


async def dead_letters(kafka: KafkaSettings, timeout: float = 20) -> list[Any]:
    """Everything on the DLQ so far; no group, so no join delay."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads cluster metadata
        partitions = [
            TopicPartition(EMAIL_CODES_DLQ_TOPIC, p)
            for p in consumer.partitions_for_topic(EMAIL_CODES_DLQ_TOPIC) or set()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def test_permanent_failure_is_dead_lettered_and_others_still_delivered(
    harness: Harness,
) -> None:
    rejected, fine = unique_email("rejected"), unique_email("fine")
    harness.smtp.replies[rejected] = "550 5.1.1 mailbox does not exist"
    bad, good = event(rejected), event(fine)
    await harness.publish(bad, good)

    await harness.smtp.await_for(fine)
    row = await harness.record(bad.event_id)
    assert row is not None and row.status == "failed" and row.attempts == 1
    assert row.error is not None and "550" in row.error
    assert harness.smtp.to(rejected) == []

    dlq = [r for r in await dead_letters(harness.kafka) if r.key == rejected.encode()]
    assert len(dlq) == 1
    assert EmailCodeEvent.from_bytes(dlq[0].value).event_id == bad.event_id
    assert b"550" in dict(dlq[0].headers)["reason"]


async def test_transient_failures_are_retried_until_delivered(harness: Harness) -> None:
    greylisted = unique_email("greylisted")
    harness.smtp.failures[greylisted] = 2
    ev = event(greylisted)
    await harness.publish(ev)
    [mail] = await harness.smtp.await_for(greylisted)
    assert mail.code == "424242"
    row = await harness.record(ev.event_id)
    assert row is not None and row.status == "sent" and row.attempts == 3


async def test_exhausted_retries_are_dead_lettered(harness: Harness) -> None:
    down = unique_email("down")
    harness.smtp.failures[down] = 100
    ev = event(down)
    await harness.publish(ev)
    row = await harness.record(ev.event_id)
    assert row is not None and row.status == "failed" and row.attempts == 4


async def test_a_redelivered_event_is_sent_once(harness: Harness) -> None:
    to = unique_email("once")
    ev = event(to)
    await harness.publish(ev, ev)
    await harness.smtp.await_for(to)
    marker = unique_email("marker")  # same key order: sent after both copies were handled
    await harness.publish(event(marker))
    await harness.smtp.await_for(marker)
    await asyncio.sleep(0.2)
    assert len(harness.smtp.to(to)) == 1


async def test_malformed_event_is_dead_lettered_not_fatal(harness: Harness) -> None:
    junk = f"not json {uuid.uuid4()}".encode()
    await harness.publish(junk)
    after = unique_email("after-junk")
    await harness.publish(event(after))
    await harness.smtp.await_for(after)
    assert any(r.value == junk for r in await dead_letters(harness.kafka))
