"""`kill -USR1 <pid>` logs every asyncio task's stack: what a stuck service waits on."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from common.debug import dump_tasks_on_sigusr1


async def test_sigusr1_logs_the_stack_of_every_task(caplog: pytest.LogCaptureFixture) -> None:
    async def stuck_on_something() -> None:
        await asyncio.Event().wait()

    waiting = asyncio.create_task(stuck_on_something(), name="the-stuck-one")
    dump_tasks_on_sigusr1()
    try:
        await asyncio.sleep(0)  # let the task reach its await
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):  # the handler runs on a later turn of the loop
            if "asyncio tasks" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert "--- the-stuck-one" in caplog.text
        assert "stuck_on_something" in caplog.text  # its stack, down to the await
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        waiting.cancel()
