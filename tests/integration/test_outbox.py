"""Sign-ups keep working while the broker is unreachable; the backlog drains, in order,
when it comes back, and every email is delivered. Auth and the mailer run as processes;
the broker starts only after the sign-ups."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.events import EMAIL_CODES_TOPIC, EmailCodeEvent
from common.kafka import KafkaSettings, ensure_topics
from infra.broker import EmbeddedBroker
from tests.conftest import Stack
from tests.support import RecordingHandler, start_smtp


async def read_all(
    bootstrap: str, want: int, timeout: float = 45
) -> list[tuple[int, EmailCodeEvent]]:
    """(partition, event) for everything on the topic, once `want` have arrived."""
    # Tansu's metadata does not show a topic created after the client connected, so make
    # sure it exists first (idempotent; the relay does the same).
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), EMAIL_CODES_TOPIC)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    events: list[tuple[int, EmailCodeEvent]] = []
    try:
        async with asyncio.timeout(timeout):
            await consumer.topics()
            partitions = [
                TopicPartition(EMAIL_CODES_TOPIC, p)
                for p in consumer.partitions_for_topic(EMAIL_CODES_TOPIC) or set()
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while len(events) < want:
                batch = await consumer.getmany(timeout_ms=500)
                events += [
                    (r.partition, EmailCodeEvent.from_bytes(r.value))
                    for rs in batch.values()
                    for r in rs
                ]
    finally:
        await consumer.stop()
    return events


async def test_200_signups_while_the_broker_is_down_are_all_delivered_later(
    stack: Stack,
) -> None:
    # The broker's port, held (bound, never listening: connections are refused) until the
    # broker starts, so that no other test's process takes it meanwhile.
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    bootstrap = f"127.0.0.1:{port}"
    auth = await asyncio.to_thread(
        stack.spawn, "auth_service", "auth-outbox", KAFKA_BOOTSTRAP_SERVERS=bootstrap
    )
    run = uuid.uuid4().hex[:8]
    emails = [f"outage-{run}-{i:03d}@example.com" for i in range(200)]
    smtp = RecordingHandler()
    controller = start_smtp(smtp)
    mailer = None
    try:
        async with httpx.AsyncClient(base_url=auth.url, timeout=60) as http:
            assert (await http.get("/readyz")).status_code == 503
            gate = asyncio.Semaphore(25)

            async def signup(email: str) -> int:
                async with gate:
                    r = await http.post(
                        "/v1/auth/signup", json={"email": email, "password": "outage passphrase"}
                    )
                    return r.status_code

            assert set(await asyncio.gather(*map(signup, emails))) == {202}

            placeholder.close()
            with EmbeddedBroker(port=port):
                events = await read_all(bootstrap, want=len(emails))
                assert (await http.get("/readyz")).status_code == 200
                mailer = await asyncio.to_thread(
                    stack.spawn,
                    "mailer_service",
                    f"mailer-outbox-{run}",
                    KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                    MAILER_SMTP_PORT=str(controller.port),
                    MAILER_GROUP_ID=f"mailer-{run}",
                )
                await smtp.await_all(emails, timeout=90)
    finally:
        placeholder.close()
        if mailer is not None:
            await asyncio.to_thread(mailer.stop)
        await asyncio.to_thread(auth.stop)
        controller.stop()

    assert sorted(e.email for _, e in events) == sorted(emails)
    # Published in commit order: within each partition, events arrive oldest first.
    for partition in {p for p, _ in events}:
        times = [e.occurred_at for p, e in events if p == partition]
        assert times == sorted(times)
    delivered = [m.rcpt for m in smtp.messages if m.rcpt in set(emails)]
    assert len(delivered) == len(set(delivered)) == 200
