"""`kill -USR1 <pid>` logs the stack of every asyncio task: what a stuck service waits on."""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger(__name__)


def dump_tasks() -> None:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()}\n")
        task.print_stack(file=out)
    log.warning("asyncio tasks:\n%s", out.getvalue())


def dump_tasks_on_sigusr1() -> None:
    """Call from a running event loop (an app's lifespan)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
