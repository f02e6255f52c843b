"""The mailer's consume → send → record → commit loop on the real broker and a real SMTP
server: transient failures retried through the delay topics without holding up other mail,
permanent ones dead-lettered, duplicates suppressed, every step announced and recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from common.db import make_engine, make_sessionmaker, migrate
from common.events import (
    DELIVERY_STATUS_TOPIC,
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    EmailCodeEvent,
    EmailEventType,
    retry_topic,
)
from common.kafka import KafkaSettings, ensure_topics, make_producer
from infra.broker import EmbeddedBroker
from mailer_service.config import MailerSettings
from mailer_service.consumer import Mailer
from mailer_service.history import History
from mailer_service.models import Base, Delivery, DeliveryAttempt
from mailer_service.smtp import SmtpPool
from tests.support import RecordingHandler, start_smtp, unique_email, wait_until_async


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
        self,
        kafka: KafkaSettings,
        mailer: Mailer,
        handler: FlakyHandler,
        sessions: Any,
        smtp_port: int,
    ) -> None:
        self.kafka = kafka
        self.smtp_port = smtp_port
        self.mailer = mailer
        self.smtp = handler
        self.sessions = sessions

    async def publish(self, *values: bytes | EmailCodeEvent, partition: int | None = None) -> None:
        await publish(self.kafka, *values, partition=partition)

    async def record(self, event_id: str, *, final: bool = True) -> Delivery | None:
        return await finished_row(self.sessions, event_id, final=final)

    async def attempts(self, event_id: str) -> list[tuple[int, str]]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.event_id == event_id)
                .order_by(DeliveryAttempt.id)
            )
            return [(a.attempt, a.outcome) for a in rows]


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    """A broker of its own: the shared stack's mailer would consume these events too."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="module")
async def harness(
    own_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    tmp_path = tmp_path_factory.mktemp("mailer")
    kafka = KafkaSettings(bootstrap_servers=own_broker)
    await ensure_topics(kafka, EMAIL_CODES_TOPIC, EMAIL_CODES_DLQ_TOPIC)
    handler = FlakyHandler()
    controller = start_smtp(handler)
    settings = MailerSettings(
        smtp_port=controller.port,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
        group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
        max_attempts=4,
        retry_delays_seconds=[0.3, 0.6, 1.0],
    )
    engine = make_engine(settings.database_url)
    await migrate(engine, Base)
    sessions = make_sessionmaker(engine)
    smtp = SmtpPool(settings)
    mailer = Mailer(settings, kafka, History(engine), smtp)
    mailer.start()
    try:
        yield Harness(kafka, mailer, handler, sessions, controller.port)
    finally:
        await mailer.stop()
        await smtp.close()
        await engine.dispose()
        controller.stop()


async def publish(
    kafka: KafkaSettings, *values: bytes | EmailCodeEvent, partition: int | None = None
) -> None:
    """Onto the main topic, keyed as auth keys them (junk bytes under a key of their own)."""
    producer = make_producer(kafka)
    await producer.start()
    try:
        for value in values:
            if isinstance(value, EmailCodeEvent):
                raw, key = value.to_bytes(), value.key
            else:
                raw, key = value, b"junk"
            await producer.send_and_wait(EMAIL_CODES_TOPIC, raw, key=key, partition=partition)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running_mailer(
    settings: MailerSettings, kafka: KafkaSettings
) -> AsyncIterator[tuple[AsyncEngine, Mailer]]:
    """A mailer of its own (its own database), started; yields its database engine and it."""
    engine = make_engine(settings.database_url)
    await migrate(engine, Base)
    smtp = SmtpPool(settings)
    mailer = Mailer(settings, kafka, History(engine), smtp)
    mailer.start()
    try:
        yield engine, mailer
    finally:
        await mailer.stop()
        await smtp.close()
        await engine.dispose()


def event(email: str, **kwargs: Any) -> EmailCodeEvent:
    return EmailCodeEvent(
        type=EmailEventType.EMAIL_VERIFICATION, email=email, code="424242", **kwargs
    )


async def topic_records(kafka: KafkaSettings, topic: str, timeout: float = 20) -> list[Any]:
    """Everything on a topic so far; no group, so no join delay."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads cluster metadata
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()
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


async def dead_letters(kafka: KafkaSettings) -> list[Any]:
    return await topic_records(kafka, EMAIL_CODES_DLQ_TOPIC)


async def statuses(kafka: KafkaSettings, event_id: str) -> list[tuple[str, int, str | None]]:
    found = []
    for record in await topic_records(kafka, DELIVERY_STATUS_TOPIC):
        status = json.loads(record.value)
        if status["event_id"] == event_id:
            found.append((status["status"], status["attempt"], status["reason"]))
    return found


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
    [(queued, _, _), (failed, attempt, reason)] = await statuses(harness.kafka, bad.event_id)
    assert (queued, failed, attempt) == ("queued", "failed", 1)
    assert reason is not None and "550" in reason


async def test_transient_failures_are_retried_until_delivered(harness: Harness) -> None:
    greylisted = unique_email("greylisted")
    harness.smtp.failures[greylisted] = 2
    ev = event(greylisted)
    await harness.publish(ev)
    [mail] = await harness.smtp.await_for(greylisted)
    assert mail.code == "424242"
    row = await harness.record(ev.event_id)
    assert row is not None and row.status == "sent" and row.attempts == 3
    assert await harness.attempts(ev.event_id) == [(1, "retrying"), (2, "retrying"), (3, "sent")]
    assert [(s, a) for s, a, _ in await statuses(harness.kafka, ev.event_id)] == [
        ("queued", 1),
        ("retrying", 1),
        ("retrying", 2),
        ("sent", 3),
    ]


async def test_a_waiting_retry_does_not_hold_up_other_mail(harness: Harness) -> None:
    """The greylisted email waits in a delay topic; the rest of its partition flows on."""
    greylisted = unique_email("slow")
    harness.smtp.failures[greylisted] = 2  # delivered after ≥ 0.7 s of retry delays
    others = [unique_email("flowing") for _ in range(20)]
    await harness.publish(event(greylisted), *(event(o) for o in others), partition=0)
    await harness.smtp.await_for(greylisted)
    with harness.smtp.lock:
        order = [m.rcpt for m in harness.smtp.messages if m.rcpt in {greylisted, *others}]
    assert order[-1] == greylisted
    assert sorted(order[:-1]) == sorted(others)


async def test_exhausted_retries_are_dead_lettered(harness: Harness) -> None:
    down = unique_email("down")
    harness.smtp.failures[down] = 100
    ev = event(down)
    await harness.publish(ev)
    row = await harness.record(ev.event_id)
    assert row is not None and row.status == "failed" and row.attempts == 4
    assert row.error is not None and "451" in row.error
    assert [a for a, _ in await harness.attempts(ev.event_id)] == [1, 2, 3, 4]
    assert [r for r in await dead_letters(harness.kafka) if r.key == down.encode()]


async def test_a_redelivered_event_is_sent_once(harness: Harness) -> None:
    to = unique_email("once")
    ev = event(to)
    await harness.publish(ev, ev, partition=0)
    await harness.smtp.await_for(to)
    # Behind both copies on the same partition: once it is sent, both copies were handled.
    marker = unique_email("marker")
    await harness.publish(event(marker), partition=0)
    await harness.smtp.await_for(marker)
    assert len(harness.smtp.to(to)) == 1


async def test_malformed_event_is_dead_lettered_not_fatal(harness: Harness) -> None:
    junk = f"not json {uuid.uuid4()}".encode()
    await harness.publish(junk)
    after = unique_email("after-junk")
    await harness.publish(event(after))
    await harness.smtp.await_for(after)
    assert any(r.value == junk for r in await dead_letters(harness.kafka))


async def test_events_it_could_not_send_or_store_are_dead_lettered_not_retried(
    harness: Harness,
) -> None:
    """Well-formed JSON that the mailer could not send, render safely or store (a foreign
    producer's): each used to fail its batch again and again, after the send for some,
    wedging its partition. Now they are refused on arrival, like malformed ones."""
    base = event(unique_email("poison")).model_dump(mode="json")
    poisons = [
        {**base, "event_id": uuid.uuid4().hex, "occurred_at": "2026-11-24T10:00:00"},  # naive
        {**base, "event_id": uuid.uuid4().hex, "occurred_at": "9999-12-31T23:30:00-01:00"},
        {**base, "event_id": uuid.uuid4().hex, "email": "a b@example.com"},
        {**base, "event_id": uuid.uuid4().hex, "email": "a<b@example.com"},  # went to b@
        {**base, "event_id": uuid.uuid4().hex, "email": "a@example.com\r\nBcc: c@example.com"},
        {**base, "event_id": "x" * 65},  # over the column's 64 (PostgreSQL refused it)
        {**base, "event_id": "id\r\nX-Injected: 1"},  # into a MIME boundary
    ]
    raws = [json.dumps(poison).encode() for poison in poisons]
    await harness.publish(*raws, partition=0)
    marker = unique_email("after-poison")
    await harness.publish(event(marker), partition=0)  # behind them all
    await harness.smtp.await_for(marker)
    assert set(raws) <= {record.value for record in await dead_letters(harness.kafka)}
    assert not harness.smtp.to("b@example.com") and not harness.smtp.to("c@example.com")


async def test_an_outcome_the_database_refuses_is_stored_later_not_sent_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The email went out but its outcome could not be written (a full disk, a read-only
    database): the batch used to fail, rewind and send it again every few seconds for as
    long as that lasted. Now the write is tried again while the email holds its slot."""
    write = History._write
    refusals = [sqlite3.OperationalError("database or disk is full")] * 3

    async def refusing(self: History, outcomes: Any) -> None:
        if refusals:
            raise refusals.pop()
        await write(self, outcomes)

    monkeypatch.setattr(History, "_write", refusing)
    to = unique_email("unrecorded")
    ev = event(to)
    await harness.publish(ev)
    row = await harness.record(ev.event_id)
    assert row is not None and row.status == "sent"
    assert not refusals
    assert len(harness.smtp.to(to)) == 1


class SlowSink(RecordingHandler):
    """Takes 0.15 s to accept each message: over one connection a batch of 90 is in flight
    for 13 s or more, beyond the time a member takes to join."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.15)
        return await super().handle_DATA(server, session, envelope)


async def test_a_member_joining_mid_batch_repeats_nothing(tmp_path: Path) -> None:
    """A second mailer joins while the first is sending a batch of 90 (a deploy, a
    scale-out). The partitions it takes used to be read again from their last commit and
    sent by both: 23 to 137 duplicates in a review's runs. The revocation now waits for
    the batch to be sent and committed."""
    sink = SlowSink()
    controller = start_smtp(sink)
    emails = [unique_email(f"joined-{i}") for i in range(90)]
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await ensure_topics(kafka, EMAIL_CODES_TOPIC)
        settings = MailerSettings(
            smtp_port=controller.port,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",  # shared, as on PG
            group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
            smtp_connections=1,  # one partition after the other: each has some unsent
        )
        engine = make_engine(settings.database_url)
        await migrate(engine, Base)
        mailers = [Mailer(settings, kafka, History(engine), SmtpPool(settings)) for _ in "ab"]
        first, second = mailers
        try:
            first.start()
            await wait_until_async(lambda: first.joined and first.running)
            producer = make_producer(kafka)
            await producer.start()
            try:
                sent = [event(email) for email in emails]
                await asyncio.gather(
                    *[await producer.send(EMAIL_CODES_TOPIC, e.to_bytes(), key=e.key) for e in sent]
                )
            finally:
                await producer.stop()
            await wait_until_async(lambda: len(sink.messages) >= 2)
            assert len(sink.messages) < 30  # the batch is still going
            second.start()
            await wait_until_async(
                lambda: all(len(sink.to(email)) for email in emails), timeout=120
            )
            # The rebalance ends only once the first member's batch is committed, so the
            # second may join after the last email; what it then reads is what repeats.
            await wait_until_async(lambda: second.joined and second.running, timeout=120)
            await asyncio.sleep(2.0)  # a repeat, had there been one, would be here by now
        finally:
            for mailer in mailers:
                await mailer.stop()
            await engine.dispose()
            controller.stop()
    repeated = [email for email in emails if len(sink.to(email)) > 1]
    assert not repeated, f"{len(repeated)} sent twice"


async def finished_row(
    sessions: async_sessionmaker[AsyncSession], event_id: str, *, final: bool = True
) -> Delivery | None:
    """The event's row once it is finished (or, with final=False, once it exists): the
    SMTP server has the email a moment before the mailer has committed its outcome."""
    for _ in range(300):
        async with sessions() as session:
            row = await session.get(Delivery, event_id, populate_existing=True)
        if row is not None and (not final or row.status in ("sent", "failed")):
            return row
        await asyncio.sleep(0.05)
    return None


async def test_a_retry_tier_no_longer_configured_is_still_drained(
    harness: Harness, tmp_path: Path
) -> None:
    """Records left in auth.email-codes.retry.5 by a mailer configured with more tiers are
    consumed by one configured with a single tier (the subscription is a pattern)."""
    to = unique_email("stranded")
    ev = event(to)
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await ensure_topics(kafka, EMAIL_CODES_TOPIC, retry_topic(5))
        producer = make_producer(kafka)
        await producer.start()
        try:
            headers = [("attempt", b"3"), ("not-before", b"0")]
            await producer.send_and_wait(retry_topic(5), ev.to_bytes(), key=ev.key, headers=headers)
        finally:
            await producer.stop()
        settings = MailerSettings(
            smtp_port=harness.smtp_port,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
            group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
            retry_delays_seconds=[0.05],
        )
        async with running_mailer(settings, kafka) as (engine, _):
            await harness.smtp.await_for(to)
            row = await finished_row(make_sessionmaker(engine), ev.event_id)
            assert row is not None and (row.status, row.attempts) == ("sent", 3)


async def test_a_consumer_that_fails_unexpectedly_joins_again_and_delivers(
    harness: Harness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error outside a batch's processing (here, from the poll itself) used to end the
    consumer's task: the process went on answering HTTP and sent nothing more. (A
    CancelledError from inside is handled alike: tests/unit/test_keep_running.py.)"""
    group = f"mailer-test-{uuid.uuid4().hex[:8]}"
    poll = AIOKafkaConsumer.getmany
    failures = [KafkaError("a fetch failed in a way nobody expected")]

    async def fails_once(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if self._group_id == group and failures:
            raise failures.pop()
        return await poll(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", fails_once)
    to = unique_email("after-a-failure")
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await ensure_topics(kafka, EMAIL_CODES_TOPIC)
        settings = MailerSettings(
            smtp_port=harness.smtp_port,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
            group_id=group,
        )
        async with running_mailer(settings, kafka):
            await publish(kafka, event(to))
            await harness.smtp.await_for(to, timeout=90)
    assert not failures
    assert "consumer mailer" in caplog.text and "starting it again" in caplog.text


async def test_a_mailer_connecting_to_a_broker_that_lost_its_topics_rereads(
    harness: Harness, tmp_path: Path
) -> None:
    """A mailer that connects again (after an unexpected error, or a stalled join) to a
    broker that restarted empty meanwhile must read from the partitions' start, not from
    commits that name offsets of the lost log. It finds the topics it had made missing."""
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        settings = MailerSettings(
            smtp_port=harness.smtp_port,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
            group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
        )
        engine = make_engine(settings.database_url)
        mailer = Mailer(settings, kafka, History(engine), SmtpPool(settings))
        try:
            for lost in (False, False, True):  # first connection, again, again after a restart
                if lost:
                    broker.kill()
                    broker.start()
                producer = await mailer._new_producer()
                await producer.stop()
                assert mailer._reread is lost
        finally:
            await engine.dispose()


async def test_a_retry_waiting_when_the_broker_resets_is_still_sent(
    harness: Harness, tmp_path: Path
) -> None:
    """A retry partition waits paused until its first record is due. Recovering from a
    broker reset dropped that wait's timer; where the reset brings no rebalance (Apache
    Kafka after a topic was deleted and made again), the partition stayed paused and its
    mail unsent. Here the reset is only announced, so no rebalance comes either. The delay
    is long enough that the first timer cannot fire before the recovery drops it."""
    to = unique_email("held")
    harness.smtp.failures[to] = 1
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        await ensure_topics(kafka, EMAIL_CODES_TOPIC)
        settings = MailerSettings(
            smtp_port=harness.smtp_port,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/mailer.db",
            group_id=f"mailer-test-{uuid.uuid4().hex[:8]}",
            retry_delays_seconds=[8.0],
        )
        async with running_mailer(settings, kafka) as (_, mailer):
            await publish(kafka, event(to))
            await wait_until_async(lambda: mailer._timers, timeout=60)  # the retry waits
            first = dict(mailer._timers)
            mailer._reset.set()
            # Read again after the recovery, it waits on a timer of its own: not paused
            # with none.
            await wait_until_async(
                lambda: not mailer._reset.is_set() and mailer._timers and mailer._timers != first,
                timeout=60,
            )
            assert not harness.smtp.to(to)  # still waiting: the first timer did not do it
            await harness.smtp.await_for(to, timeout=60)
