"""Deleting rows that no longer count, without holding up the requests: the part auth's
and the mailer's housekeeping share.

Rows go in batches, each batch its own short transaction, so a pass never holds SQLite's
one writer for long. On PostgreSQL a batch skips rows that a request has locked
(`FOR UPDATE SKIP LOCKED`): a pass never waits for a request, so the two cannot deadlock,
and a row a request is changing (a sign-up again for an unverified address) is left for
the next pass. Each DELETE also states its condition on the rows themselves, so a row is
judged in its latest state. A rule with `then` deletes with RETURNING and hands the rows
deleted to `then`, in the same transaction (to record or announce them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import ColumnElement, Row, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import QueryableAttribute

from common.db import make_sessionmaker
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BATCH = 500
FIRST_PASS_SECONDS = 60.0


Then = Callable[[AsyncSession, Sequence[Row[Any]]], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    name: str
    key: QueryableAttribute[Any]  # the primary key of the rows to delete
    dead: ColumnElement[bool]
    returning: tuple[QueryableAttribute[Any], ...] = ()  # with `then`: what it is given
    then: Then | None = None


async def delete_in_batches(engine: AsyncEngine, rule: Rule) -> int:
    sessions = make_sessionmaker(engine)
    deleted = 0
    while True:
        batch = select(rule.key).where(rule.dead).limit(BATCH)
        if engine.dialect.name == "postgresql":
            batch = batch.with_for_update(skip_locked=True)
        statement = (
            delete(rule.key.class_)
            .where(rule.dead, rule.key.in_(batch))
            .execution_options(synchronize_session=False)
        )
        async with sessions.begin() as session:
            if rule.then is None:
                count = int(getattr(await session.execute(statement), "rowcount", 0) or 0)
            else:
                rows = (await session.execute(statement.returning(*rule.returning))).all()
                await rule.then(session, rows)
                count = len(rows)
        deleted += count
        if count < BATCH:
            return deleted
        await asyncio.sleep(0)  # let requests in between batches


async def delete_spent(engine: AsyncEngine, rules: list[Rule], counter: Counter) -> dict[str, int]:
    """Each rule's rows, deleted; how many, by rule (rows deleted by cascade not counted),
    also added to `counter` (labelled by rule) and logged."""
    counts: dict[str, int] = {}
    for rule in rules:
        counts[rule.name] = count = await delete_in_batches(engine, rule)
        counter.labels(rule.name).inc(count)
    if any(counts.values()):
        gone = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        log.info("housekeeping deleted %s", gone)
    return counts


class Housekeeper:
    """`sweep()` a minute after start (or sooner, with a short interval), then every
    `interval` seconds, whenever `should_run()` says so; a failed pass is logged and the
    next one tries again. An interval of 0 runs nothing."""

    def __init__(
        self,
        interval: float,
        sweep: Callable[[], Awaitable[object]],
        should_run: Callable[[], bool] = lambda: True,
    ) -> None:
        self._interval = interval
        self._sweep = sweep
        self._should_run = should_run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(min(FIRST_PASS_SECONDS, self._interval))
        while True:
            if self._should_run():
                try:
                    await self._sweep()
                except Exception:  # the database is away, say: the next pass will do
                    log.exception("housekeeping failed; next pass in %.0f s", self._interval)
            await asyncio.sleep(self._interval)
