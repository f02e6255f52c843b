"""The periodic pass: run only where `should_run()` says so, and never stopped by a failure."""

from __future__ import annotations

import asyncio

import pytest

from common import housekeeping
from common.housekeeping import Housekeeper


async def test_it_sweeps_only_while_it_should_and_goes_on_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(housekeeping, "FIRST_PASS_SECONDS", 0.0)
    should, asked, sweeps = False, 0, 0
    thrice, twice = asyncio.Event(), asyncio.Event()

    def should_run() -> bool:
        nonlocal asked
        asked += 1
        if asked == 3:
            thrice.set()
        return should

    async def sweep() -> None:
        nonlocal sweeps
        sweeps += 1
        if sweeps == 2:
            twice.set()
        if sweeps == 1:
            raise ConnectionError("the database is away")

    keeper = Housekeeper(0.01, sweep, should_run)
    keeper.start()
    try:
        async with asyncio.timeout(30):
            await thrice.wait()
            assert sweeps == 0  # asked three times, told no
            should = True
            await twice.wait()  # the first pass failed; the next one ran all the same
    finally:
        await keeper.stop()


async def test_an_interval_of_zero_runs_nothing() -> None:
    async def sweep() -> None:
        pass

    keeper = Housekeeper(0, sweep)
    keeper.start()
    assert keeper._task is None  # no task to run a pass
    await keeper.stop()
