"""The embedded broker keeps nothing: a restart comes back empty, and a SIGKILL loses what
it held. Auth and the mailer run as processes on a broker of their own, which these tests
kill and start again on the same port; no service is restarted. Every sign-up answered
202 must still end in a delivered email, the mailer must resume within 30 s of the
broker's return, and a broker crash must not make anyone get an email twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import func, select

from auth_service.events import email_notice
from auth_service.models import Base, OutboxEvent
from auth_service.outbox import OutboxRelay
from common.db import make_engine, make_sessionmaker, migrate
from common.events import EMAIL_CODES_TOPIC, EmailEventType
from common.kafka import KafkaSettings
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from tests.conftest import Stack, auth_settings_for
from tests.integration.test_outbox import read_all
from tests.support import RecordingHandler, ServiceProcess, start_smtp, wait_until

PASSWORD = "restart passphrase"


@dataclass
class Rig:
    broker: EmbeddedBroker
    auth: ServiceProcess
    mailer: ServiceProcess
    smtp: RecordingHandler
    run: str

    def emails(self, tag: str, n: int) -> list[str]:
        return [f"{tag}-{self.run}-{i:04d}@example.com" for i in range(n)]

    def delivered(self, emails: list[str]) -> Counter[str]:
        wanted = set(emails)
        with self.smtp.lock:
            return Counter(m.rcpt for m in self.smtp.messages if m.rcpt in wanted)

    async def sign_up(self, emails: list[str], parallel: int = 16) -> list[int]:
        gate = asyncio.Semaphore(parallel)
        async with httpx.AsyncClient(base_url=self.auth.url, timeout=60) as http:

            async def one(email: str) -> int:
                async with gate:
                    body = {"email": email, "password": PASSWORD}
                    return (await http.post("/v1/auth/signup", json=body)).status_code

            return list(await asyncio.gather(*map(one, emails)))

    def restart_broker(self) -> None:
        self.broker = EmbeddedBroker(port=self.broker.port).start()


@pytest.fixture
def rig(stack: Stack) -> Iterator[Rig]:
    run = uuid.uuid4().hex[:8]
    broker = EmbeddedBroker(port=free_port()).start()
    smtp = RecordingHandler()
    controller = start_smtp(smtp)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    # The mailer starts first, on a broker with no main topic yet: auth creates it later.
    mailer = stack.spawn(
        "mailer_service",
        f"mailer-restart-{run}",
        **env,
        MAILER_SMTP_PORT=str(controller.port),
        MAILER_GROUP_ID=f"mailer-{run}",
    )
    auth = stack.spawn("auth_service", f"auth-restart-{run}", **env)
    rig = Rig(broker, auth, mailer, smtp, run)
    try:
        yield rig
    finally:
        auth.stop()
        mailer.stop()
        rig.broker.stop()
        controller.stop()


async def test_the_mailer_resumes_within_30_s_of_an_empty_broker_restart(rig: Rig) -> None:
    warm = rig.emails("warm", 3)
    assert set(await rig.sign_up(warm)) == {202}
    await asyncio.to_thread(wait_until, lambda: len(rig.delivered(warm)) == 3, 90)

    rig.broker.kill()
    during = rig.emails("during", 20)
    assert set(await rig.sign_up(during)) == {202}  # accepted while the broker is gone
    await asyncio.sleep(2)
    rig.restart_broker()
    back = time.monotonic()
    await asyncio.to_thread(wait_until, lambda: rig.delivered(during), 60, 0.1)
    first = time.monotonic() - back
    await asyncio.to_thread(wait_until, lambda: len(rig.delivered(during)) == 20, 90)
    every = time.monotonic() - back
    print(f"\nbroker back empty: first email after {first:.1f} s, all 20 after {every:.1f} s")
    assert first < 30
    assert set(rig.delivered(during).values()) == {1}

    after = rig.emails("after", 5)  # and it keeps going
    assert set(await rig.sign_up(after)) == {202}
    await asyncio.to_thread(wait_until, lambda: len(rig.delivered(after)) == 5, 60)


async def test_a_broker_sigkilled_mid_stream_loses_no_accepted_email(rig: Rig) -> None:
    emails = rig.emails("stream", 500)
    signing_up = asyncio.create_task(rig.sign_up(emails))
    await asyncio.to_thread(wait_until, lambda: len(rig.delivered(emails)) >= 100, 120, 0.05)
    rig.broker.kill()
    at_kill = len(rig.delivered(emails))
    await asyncio.sleep(3)
    rig.restart_broker()
    statuses = await signing_up
    assert set(statuses) == {202}
    await asyncio.to_thread(wait_until, lambda: len(rig.delivered(emails)) == 500, 240, 0.2)
    got = rig.delivered(emails)
    duplicates = sum(got.values()) - len(emails)
    print(
        f"\nbroker SIGKILLed after {at_kill} of 500: all 500 delivered, {duplicates} duplicate(s)"
    )
    assert duplicates <= 1


class Relays:
    """In-process relays on one SQLite outbox and a broker of their own, with three
    unconfirmed emails (there is no mailer). Each relay stands for an auth instance."""

    def __init__(self, tmp_path: Path) -> None:
        self.engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
        self.sessions = make_sessionmaker(self.engine)
        # The timer that republishes what stays unconfirmed must not be what saves them.
        self.settings = auth_settings_for(tmp_path, outbox_republish_seconds=3600)
        self.started: list[OutboxRelay] = []
        self.broker = EmbeddedBroker(port=free_port()).start()  # last: close() stops it
        self.kafka = KafkaSettings(bootstrap_servers=self.broker.bootstrap_servers)

    async def emails(self, count: int = 3) -> None:
        await migrate(self.engine, Base)
        async with self.sessions.begin() as session:
            for _ in range(count):
                to = f"{uuid.uuid4().hex[:8]}@example.com"
                email_notice(session, EmailEventType.ACCOUNT_EXISTS, to, "en")

    async def all_published(self) -> int:
        """Until no email waits to be published; how many there are."""
        unpublished = select(func.count()).where(OutboxEvent.sent_at.is_(None))
        async with asyncio.timeout(60):
            # Polling the database: it tells no one when the relay writes.
            while True:
                async with self.sessions() as session:
                    waiting = await session.scalar(unpublished)
                if not waiting:
                    return len(await self._publishes())
                await asyncio.sleep(0.1)

    def start(self) -> OutboxRelay:
        relay = OutboxRelay(self.sessions, self.engine, self.kafka, self.settings)
        self.started.append(relay)
        relay.start()
        return relay

    async def published(self, times: int) -> None:
        """Until every email has been published `times` times."""
        async with asyncio.timeout(60):
            # Polling the database: it tells no one when the relay writes.
            while await self._publishes() != [times] * 3:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

    async def _publishes(self) -> list[int]:
        async with self.sessions() as session:
            return list((await session.scalars(select(OutboxEvent.publishes))).all())

    async def lose_everything(self, relay: OutboxRelay) -> None:
        """The relay's instance goes away; then the broker restarts, empty."""
        await relay.stop()
        self.restart_broker()

    def restart_broker(self) -> None:
        self.broker.kill()
        self.broker = EmbeddedBroker(port=self.broker.port).start()

    async def topic_as_the_broker_makes_it(self) -> None:
        """The email topic, made as the restarted broker makes one a client names: with
        its own partition count, not the relay's."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
        await admin.start()
        try:
            count = self.kafka.topic_partitions + 1
            await admin.create_topics([NewTopic(EMAIL_CODES_TOPIC, count, 1)])
        finally:
            await admin.close()

    async def close(self) -> None:
        try:
            for relay in self.started:
                await relay.stop()
            await self.engine.dispose()
        finally:
            self.broker.stop()


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[Relays]:
    rig = Relays(tmp_path)
    try:
        await rig.emails()
        yield rig
    finally:
        await rig.close()


async def test_a_relay_taking_over_after_an_empty_restart_publishes_again(
    relays: Relays,
) -> None:
    """The relay that published the emails stops (its instance went away), and the
    broker restarts empty before another relay takes over. The new one has no earlier
    topics to compare with, only the email topic missing: that is enough to publish the
    unconfirmed emails again at once."""
    await relays.lose_everything(await _published_once(relays))
    relays.start()
    await relays.published(2)
    assert len(await read_all(relays.broker.bootstrap_servers, 3)) == 3


async def test_a_topic_the_restarted_broker_made_itself_is_seen_as_a_loss(
    relays: Relays,
) -> None:
    """A client named the email topic before the new relay came (an old producer
    refreshing its metadata): the restarted broker made it, with its own partition count.
    Not missing, but not as the relay would have made it: the emails are gone all the
    same."""
    await relays.lose_everything(await _published_once(relays))
    await relays.topic_as_the_broker_makes_it()
    relays.start()
    await relays.published(2)


async def test_a_topic_remade_under_a_running_relay_loses_no_email(relays: Relays) -> None:
    """The broker restarts under a running relay, and the email topic is made, with the
    broker's count, before the relay looks. The relay remakes it with its own count; its
    producer, which had seen the broker's, sent a quarter of the emails to a partition
    the new topic lacks: acknowledged, and dropped."""
    await _published_once(relays)
    relays.restart_broker()
    await relays.topic_as_the_broker_makes_it()
    await relays.emails(40)
    emails = await relays.all_published()
    assert len(await read_all(relays.broker.bootstrap_servers, emails)) >= emails


async def test_a_loss_seen_while_the_database_is_away_is_not_forgotten(
    relays: Relays, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new relay sees the topic missing, but marking the emails fails (the database
    is away: asyncpg's refused connection is an OSError, which the relay retries). Its
    next try must still know: it used to find the topic it had made meanwhile, and
    nothing amiss."""
    await relays.lose_everything(await _published_once(relays))
    republish = OutboxRelay._republish
    failures: list[bool] = []

    async def away_once(self: OutboxRelay, *, everything: bool = False) -> int:
        if everything and not failures:
            failures.append(True)
            raise OSError("connection refused")
        return await republish(self, everything=everything)

    monkeypatch.setattr(OutboxRelay, "_republish", away_once)
    relays.start()
    await relays.published(2)
    assert failures


async def _published_once(relays: Relays) -> OutboxRelay:
    relay = relays.start()
    await relays.published(1)
    return relay
