"""A Kafka consumer's task never ends on an error nobody expected: `keep_running` logs it
and starts the consumer again, and only a stop ends it (the real consumers, on a real
broker, are in tests/integration/test_mailer.py)."""

from __future__ import annotations

import asyncio

import pytest

from common import kafka
from common.kafka import keep_running


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.Backoff, "wait", lambda self, stopping=None: asyncio.sleep(0))


async def test_a_consumer_that_fails_is_started_again_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[BaseException] = [RuntimeError("nobody expected this"), asyncio.CancelledError()]
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if failures:
            raise failures.pop(0)

    before = kafka.CONSUMER_FAILURES.labels("test")._value.get()
    await asyncio.wait_for(keep_running(run, "test", asyncio.Event()), 5)
    assert runs == 3
    assert "consumer test failed; starting it again" in caplog.text
    assert "consumer test was cancelled from inside; starting it again" in caplog.text
    assert kafka.CONSUMER_FAILURES.labels("test")._value.get() == before + 2


async def test_a_stop_is_not_taken_for_a_failure() -> None:
    """Cancelling the task that keeps the consumer running ends it: no restart."""
    started = asyncio.Event()
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(keep_running(run, "test", asyncio.Event()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert runs == 1


async def test_a_failure_once_stopping_ends_it() -> None:
    stopping = asyncio.Event()
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        stopping.set()
        raise RuntimeError("failed on the way out")

    await asyncio.wait_for(keep_running(run, "test", stopping), 5)
    assert runs == 1
