"""The relay's own loop: whatever fails inside a term of leadership, the relay logs it,
gives the lock back (so another instance can take over) and starts again; it never dies
holding the lock, which would stall every instance's email. And the mailer's word on an
email, when it comes before the relay has marked the email published, is kept."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from sqlalchemy import select

from auth_service import outbox
from auth_service.models import Base, OutboxEvent
from auth_service.outbox import OutboxRelay
from common.db import make_engine, make_sessionmaker, migrate
from common.events import EMAIL_CODES_TOPIC, DeliveryStatus, DeliveryStatusEvent
from common.kafka import KafkaSettings, close_quietly
from tests.conftest import auth_settings_for


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops our probe's lock, if we got it
    return True


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (RuntimeError("something nobody expected"), "the outbox relay failed"),
        # A client library's future cancelled under the relay: it used to end the relay's
        # task silently, the lock still held, and no instance relayed again.
        (asyncio.CancelledError("a future cancelled under us"), "cancelled from inside"),
    ],
)
async def test_a_failing_term_releases_the_lock_and_the_relay_starts_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: BaseException,
    logged: str,
) -> None:
    monkeypatch.setattr(outbox, "LEADER_RETRY_SECONDS", 0.01)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    relay = OutboxRelay(
        make_sessionmaker(engine),
        engine,
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        auth_settings_for(tmp_path),
    )
    lock_file = tmp_path / "auth.db.relay-lock"
    terms: list[bool] = []
    second_term = asyncio.Event()

    async def lead() -> None:
        terms.append(lock_is_free(lock_file))  # held during a term
        if len(terms) == 1:
            raise error
        second_term.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(relay, "_lead", lead)
    relay.start()
    try:
        await asyncio.wait_for(second_term.wait(), 10)
        assert terms == [False, False]
        assert relay.leader
        assert f"{logged}; starting it again" in caplog.text
        assert str(error) in caplog.text  # with its traceback
    finally:
        await relay.stop()
        await engine.dispose()
    assert lock_is_free(lock_file)  # and stopping gives it back


async def test_a_delivery_reported_before_the_publish_is_counted_stays_acknowledged(
    tmp_path: Path,
) -> None:
    """The relay awaits the broker's acks and checks the topics before it marks a batch
    published; a fast mailer can send the email and report it in that time. Marking it
    published used to clear that report: the email, sent, then waited to be republished
    (with its payload already blanked) and was finally logged as never delivered."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    await migrate(engine, Base)
    sessions = make_sessionmaker(engine)
    relay = OutboxRelay(
        sessions,
        engine,
        KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        auth_settings_for(tmp_path),
    )
    try:
        async with sessions.begin() as session:
            email = OutboxEvent(
                topic=EMAIL_CODES_TOPIC, key="a@example.com", event_id="e1", payload="{}"
            )
            session.add(email)
        sent = DeliveryStatusEvent(
            event_id="e1",
            email="a@example.com",
            type="email_verification",
            status=DeliveryStatus.SENT,
            attempt=1,
        )
        record = ConsumerRecord(
            "mail.delivery-status", 0, 0, 0, 0, b"a@example.com", sent.to_bytes(), None, 0, 0, []
        )
        await relay._acks.apply([record])  # the mailer's word, first
        await relay._mark_published([email.id])  # then the relay counts its acks
        async with sessions() as session:
            row = await session.scalar(select(OutboxEvent).where(OutboxEvent.id == email.id))
        assert row is not None and row.sent_at is not None
        assert row.acked_at is not None and row.payload is None
    finally:
        await engine.dispose()


class StopsWithItsOwnTaskCancelled:
    """A client whose stop() ends in a CancelledError of its own making, as aiokafka's
    consumer does when stopped while a fetch backs off."""

    async def stop(self) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        inner.cancel()
        await inner


async def test_a_client_stopping_with_its_own_task_cancelled_is_closed_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """That CancelledError escaped close_quietly and ended the relay's task (or the
    mailer's) without a word, the relay's lock still held."""
    await close_quietly(StopsWithItsOwnTaskCancelled(), "the test client")
    assert "the test client stopped with one of its own tasks cancelled" in caplog.text


async def test_closing_quietly_still_gives_way_to_a_stop() -> None:
    started = asyncio.Event()

    class Slow:
        async def stop(self) -> None:
            started.set()
            await asyncio.sleep(10)

    closing = asyncio.create_task(close_quietly(Slow(), "the test client"))
    await started.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
