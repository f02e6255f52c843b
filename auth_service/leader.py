"""One outbox relay per auth database, however many instances and workers share it.

Two relays publishing the same rows would break the per-recipient order and double the
traffic, so each relay first takes a lock that lives as long as its holder:

- on PostgreSQL, a session advisory lock on a connection of its own: the server drops it
  when that connection ends, so a killed instance hands over within seconds;
- on SQLite, an exclusive `flock` on a file beside the database: the kernel drops it when
  the process dies.

The others wait and try again. `wake()` reaches the holder from any process: on
PostgreSQL through NOTIFY (the holder LISTENs); on SQLite, which has no such channel, the
holder polls often when several workers may be writing (AUTH_WORKERS > 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

LOCK_KEY = 0x6F7574626F78  # "outbox"
CHANNEL = "auth_outbox"


class RelayLock:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._conn: AsyncConnection | None = None
        self._fd: int | None = None
        self._listening: Callable[..., Any] | None = None

    @property
    def lock_file(self) -> Path | None:
        database = make_url(str(self._engine.url)).database
        if self._postgres or not database or database == ":memory:":
            return None
        return Path(f"{database}.relay-lock")

    async def acquire(self, on_wake: Callable[[], None]) -> bool:
        """Take the lock if it is free (never waits); `on_wake` runs on each NOTIFY."""
        if self._postgres:
            return await self._acquire_postgres(on_wake)
        path = self.lock_file
        if path is None:
            return True
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def _acquire_postgres(self, on_wake: Callable[[], None]) -> bool:
        conn = await self._engine.connect()
        try:
            got = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY})
            if not got:
                await conn.close()
                return False
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None

            def listener(*_: object) -> None:
                on_wake()

            await raw.add_listener(CHANNEL, listener)
            self._listening = listener
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # it may hold the lock: end its session
            await conn.close()
            raise
        self._conn = conn
        return True

    async def still_held(self) -> bool:
        """False once the lock's connection is gone (PostgreSQL restarted, network cut)."""
        if self._conn is None:
            return self._fd is not None or self.lock_file is None
        try:
            await asyncio.wait_for(self._conn.execute(text("SELECT 1")), 5)
        except Exception as exc:  # any failure of that connection means the lock is lost
            log.warning("the relay's lock connection failed (%s); standing down", exc)
            await self.release()
            return False
        return True

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            # Ending the session ends the lock. Closing alone would hand the connection
            # back to the pool, still holding it: no other instance could take over.
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    async def wake(self) -> None:
        """Tell the holder, wherever it runs, that new rows are waiting (PostgreSQL only)."""
        if not self._postgres:
            return
        async with self._engine.connect() as conn:
            await conn.execute(text(f"NOTIFY {CHANNEL}"))
            await conn.commit()
