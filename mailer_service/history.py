"""The mailer's own database: which events are done (dedupe) and what happened to each.

Outcomes are written right after each SMTP answer, so a crash can repeat only the sends
whose answer had arrived but whose row had not been written yet. Writes that arrive while
one is being committed are group-committed together in the next transaction: one commit
for many emails under load, no added wait when idle. On SQLite a group is one hand-off
to aiosqlite's thread (`common/sqlite.py`); on PostgreSQL it is one statement (the
upsert in a CTE, the attempts after it, every column an array), which is atomic on its
own and so runs outside a transaction: one round trip instead of BEGIN, two statements
and COMMIT.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, String, Table, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeEngine

from common.clock import utcnow
from common.events import DeliveryStatus
from common.sqlite import write_in_one_hop
from mailer_service.models import Delivery, DeliveryAttempt

TERMINAL = {DeliveryStatus.SENT.value, DeliveryStatus.FAILED.value}


@dataclass(frozen=True)
class Seen:
    status: str
    attempts: int
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def covers(self, attempt: int) -> bool:
        """True if the event is finished or this attempt was already made."""
        return self.finished or self.attempts >= attempt


@dataclass(frozen=True)
class Outcome:
    event_id: str
    recipient: str
    type: str
    status: DeliveryStatus
    attempt: int
    queued_at: datetime  # when auth queued the email (the event's occurred_at)
    error: str | None = None
    at: datetime = field(default_factory=utcnow)


class History:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # Built once: constructing them (with their `excluded` columns) costs more than
        # running them.
        if self._postgres:
            self._upsert = _upsert(
                postgresql.insert(Delivery).from_select(_columns(DELIVERY), _rows(DELIVERY))
            )
            self._group = (
                postgresql.insert(DeliveryAttempt)
                .from_select(_columns(ATTEMPT), _rows(ATTEMPT))
                .add_cte(self._upsert.returning(Delivery.event_id).cte("upserted"))
            )
        else:
            self._upsert = _upsert(sqlite.insert(Delivery))
            self._add_attempts = sqlite.insert(DeliveryAttempt)
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def seen(self, event_ids: Iterable[str]) -> dict[str, Seen]:
        ids = list(set(event_ids))
        found: dict[str, Seen] = {}
        async with self._engine.connect() as conn:
            for start in range(0, len(ids), 500):  # stay under bind-parameter limits
                rows = await conn.execute(
                    select(
                        Delivery.event_id, Delivery.status, Delivery.attempts, Delivery.updated_at
                    ).where(Delivery.event_id.in_(ids[start : start + 500]))
                )
                found.update(
                    (row.event_id, Seen(row.status, row.attempts, row.updated_at)) for row in rows
                )
        return found

    async def record(self, outcome: Outcome) -> None:
        """Return once the outcome is committed."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="history-writer")
        await done

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([outcome for outcome, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch, exc)
                    continue
                # One bad outcome must not sink the others committed with it: each alone.
                for one in batch:
                    try:
                        await self._write([one[0]])
                    except Exception as alone:
                        _settle([one], alone)
                    else:
                        _settle([one], None)
            else:
                _settle(batch, None)

    async def _write(self, outcomes: list[Outcome]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for o in outcomes:  # one row per event per statement (PostgreSQL insists)
            latest[o.event_id] = {
                "event_id": o.event_id,
                "recipient": o.recipient,
                "type": o.type,
                "status": o.status.value,
                "attempts": o.attempt,
                "error": o.error,
                "queued_at": o.queued_at,
                "updated_at": o.at,
            }
        attempts = [
            {
                "event_id": o.event_id,
                "attempt": o.attempt,
                "outcome": o.status.value,
                "error": o.error,
                "at": o.at,
            }
            for o in outcomes
        ]
        if self._postgres:
            columns = {**_arrays(DELIVERY, latest.values()), **_arrays(ATTEMPT, attempts)}
            async with self._engine.connect() as conn:
                alone = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await alone.execute(self._group, columns)
            return
        steps = [(self._upsert, list(latest.values())), (self._add_attempts, attempts)]
        await write_in_one_hop(self._engine, steps)

    async def for_recipient(self, email: str, limit: int) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            deliveries = (
                await conn.execute(
                    select(Delivery)
                    .where(Delivery.recipient == email)
                    .order_by(Delivery.queued_at.desc())
                    .limit(limit)
                )
            ).all()
            attempts = (
                await conn.execute(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.event_id.in_([d.event_id for d in deliveries]))
                    .order_by(DeliveryAttempt.id)
                )
            ).all()
        by_event: dict[str, list[dict[str, Any]]] = {}
        for a in attempts:
            by_event.setdefault(a.event_id, []).append(
                {"attempt": a.attempt, "outcome": a.outcome, "error": a.error, "at": a.at}
            )
        return [
            {
                "event_id": d.event_id,
                "type": d.type,
                "status": d.status,
                "attempts": d.attempts,
                "error": d.error,
                "queued_at": d.queued_at,
                "updated_at": d.updated_at,
                "history": by_event.get(d.event_id, []),
            }
            for d in deliveries
        ]

    async def forget(self, email: str) -> None:
        """Drop a recipient's history (their account was deleted). Idempotent."""
        events = select(Delivery.event_id).where(Delivery.recipient == email)
        async with self._engine.begin() as conn:
            await conn.execute(delete(DeliveryAttempt).where(DeliveryAttempt.event_id.in_(events)))
            await conn.execute(delete(Delivery).where(Delivery.recipient == email))


DELIVERY: Table = Delivery.__table__  # type: ignore[assignment]
ATTEMPT: Table = DeliveryAttempt.__table__  # type: ignore[assignment]


@functools.cache
def _columns(table: Table) -> tuple[str, ...]:
    """The columns a group writes (not the attempts' own id); once a table, not a write."""
    return tuple(c.name for c in table.columns if c.autoincrement is not True)


def _rows(table: Table) -> Select[Any]:
    """PostgreSQL: the rows of a group, from one array parameter per column
    (`<table>_<column>`), unnested side by side."""
    return select(
        *(
            func.unnest(
                bindparam(f"{table.name}_{c}", type_=postgresql.ARRAY(_unbounded(table, c)))
            )
            for c in _columns(table)
        )
    )


def _unbounded(table: Table, column: str) -> TypeEngine[Any]:
    """The column's type without a length: a cast to VARCHAR(64)[] would cut a longer
    value short, where the insert into the column refuses it."""
    kind = table.c[column].type
    return String() if isinstance(kind, String) else kind


def _arrays(table: Table, rows: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    rows = list(rows)
    return {f"{table.name}_{c}": [row[c] for row in rows] for c in _columns(table)}


def _upsert(insert: Any) -> Insert:
    """A delivery's row, or its new status if it has one."""
    return insert.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[Delivery.event_id],
        set_={
            "status": insert.excluded.status,
            "attempts": insert.excluded.attempts,
            "error": insert.excluded.error,
            "updated_at": insert.excluded.updated_at,
        },
    )


def _settle(batch: list[tuple[Outcome, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
