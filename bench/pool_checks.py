"""`python -m bench.pool_checks [ADMIN_DSN]`: what checking a pooled PostgreSQL connection
costs a transaction. One connection, checked out for a one-statement transaction again
and again, in alternating rounds: with SQLAlchemy's `pool_pre_ping` (a check at every
checkout) and with `common.db.ping_when_idle` (a check only after an idle second, so
never in this loop). This process runs on the service's core and the connection's
server process on the other, so the figures are the client's cost, as a service pays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.harness import LOAD_CORE, SERVICE_CORE
from common.db import ping_when_idle
from infra import postgres

TRANSACTIONS = 3000
ROUNDS = 4


async def per_transaction(url: str, pre_ping: bool) -> tuple[float, float]:
    """(wall µs, this process's CPU µs) per checkout + BEGIN + SELECT + COMMIT."""
    engine: AsyncEngine = create_async_engine(url, pool_size=1, pool_pre_ping=pre_ping)
    if not pre_ping:
        ping_when_idle(engine.sync_engine)
    try:
        async with engine.connect() as conn:
            backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        with contextlib.suppress(OSError):  # a server on another host stays where it is
            os.sched_setaffinity(int(backend or 0), {LOAD_CORE})
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(TRANSACTIONS):
            async with engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
        return (
            (time.perf_counter() - wall) / TRANSACTIONS * 1e6,
            (time.process_time() - cpu) / TRANSACTIONS * 1e6,
        )
    finally:
        await engine.dispose()


async def main(dsn: str) -> None:
    url = postgres.database_url(dsn, dsn.rsplit("/", 1)[-1])
    found: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(ROUNDS):
        for pre_ping in (True, False):
            found[pre_ping].append(await per_transaction(url, pre_ping))
    for pre_ping, label in ((True, "pool_pre_ping"), (False, "ping_when_idle")):
        wall = statistics.median(w for w, _ in found[pre_ping])
        cpu = statistics.median(c for _, c in found[pre_ping])
        print(f"{label:15s} {wall:6.0f} µs wall, {cpu:6.0f} µs CPU a transaction (median)")
    ratio = statistics.median(c for _, c in found[False]) / statistics.median(
        c for _, c in found[True]
    )
    print(f"CPU with ping_when_idle / with pool_pre_ping: {ratio:.2f}x")


if __name__ == "__main__":
    os.sched_setaffinity(0, {SERVICE_CORE})
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else postgres.ADMIN_DSN))
