"""The one-hop SQLite cursor (common/sqlite.py) answers as SQLAlchemy's own does: rows,
RETURNING, rowcount, lastrowid, executemany, and errors as SQLAlchemy exceptions; and its
transactions isolate their reads from another process's writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import make_engine

META = MetaData()
THINGS = Table(
    "things", META, Column("id", Integer, primary_key=True), Column("name", String, unique=True)
)


@dataclass
class Hops:
    n: int = 0


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Hops:
    """Counts the hand-offs to aiosqlite's thread from here on."""
    counted = Hops()
    execute = aiosqlite.Connection._execute

    async def counting(
        self: aiosqlite.Connection, fn: object, *args: object, **kw: object
    ) -> object:
        counted.n += 1
        return await execute(self, fn, *args, **kw)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return counted


async def test_statements_and_their_outcomes(tmp_path: Path, hops: Hops) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(META.create_all)
        async with engine.begin() as conn:
            hops.n = 0
            added = await conn.execute(insert(THINGS).values(name="a"))
            assert hops.n == 1  # one hand-off to aiosqlite's thread, not four
            assert added.inserted_primary_key == (1,)
            await conn.execute(insert(THINGS), [{"name": "b"}, {"name": "c"}])  # executemany
            changed = await conn.execute(
                update(THINGS).where(THINGS.c.id > 1).values(name="z" + THINGS.c.name)
            )
            assert changed.rowcount == 2
            back = await conn.execute(
                update(THINGS).where(THINGS.c.id == 1).values(name="A").returning(THINGS.c.name)
            )
            assert back.scalar_one() == "A"
            assert (
                await conn.execute(select(THINGS.c.name).order_by(THINGS.c.id))
            ).scalars().all() == [
                "A",
                "zb",
                "zc",
            ]
            assert (await conn.execute(text("SELECT count(*) FROM things WHERE 0"))).scalar() == 0
        async with engine.connect() as conn:
            with pytest.raises(IntegrityError):
                await conn.execute(insert(THINGS).values(name="A"))
            await conn.rollback()
            assert (
                await conn.execute(select(THINGS.c.id).where(THINGS.c.name == "A"))
            ).scalar() == 1
    finally:
        await engine.dispose()


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one file with `things` made: two processes' connections
    (AUTH_WORKERS, or several instances)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    one, other = make_engine(url), make_engine(url)
    async with one.begin() as conn:
        await conn.run_sync(META.create_all)
    yield one, other
    await one.dispose()
    await other.dispose()


async def test_a_read_for_update_holds_across_processes(
    processes: tuple[AsyncEngine, AsyncEngine], hops: Hops
) -> None:
    """What a transaction read FOR UPDATE cannot change under it before it writes: the
    other process's write waits for its commit. SQLite drops the clause; without the
    BEGIN IMMEDIATE in its place the read ran outside the transaction and the other's +10
    was lost (the count ended at 1). The BEGIN costs no extra hop to aiosqlite's thread."""
    one, other = processes
    async with one.begin() as conn:
        await conn.execute(insert(THINGS).values(id=1, name="0"))
    count = select(THINGS.c.name).where(THINGS.c.id == 1)

    async def add_ten() -> None:
        async with other.begin() as conn:
            seen = int((await conn.execute(count.with_for_update())).scalar_one())
            await conn.execute(update(THINGS).values(name=str(seen + 10)))

    hops.n = 0
    async with one.begin() as conn:
        seen = int((await conn.execute(count.with_for_update())).scalar_one())
        assert hops.n == 1
        meanwhile = asyncio.create_task(add_ten())
        # Long enough for the other write to land, had it not been made to wait.
        done, _ = await asyncio.wait({meanwhile}, timeout=1.0)
        assert not done
        await conn.execute(update(THINGS).values(name=str(seen + 1)))
    await meanwhile
    async with other.connect() as conn:
        assert (await conn.execute(count)).scalar_one() == "11"


async def test_a_plain_read_waits_for_no_one(processes: tuple[AsyncEngine, AsyncEngine]) -> None:
    """Reads without FOR UPDATE stay outside any transaction: one runs, and sees the last
    commit, while another process holds the write lock."""
    one, other = processes
    async with one.begin() as conn:
        await conn.execute(insert(THINGS).values(id=1, name="before"))
    name = select(THINGS.c.name).where(THINGS.c.id == 1)
    async with one.begin() as conn:
        await conn.execute(name.with_for_update())
        await conn.execute(update(THINGS).values(name="after"))
        async with other.connect() as reader:
            read = reader.execute(name)
            assert (await asyncio.wait_for(read, timeout=20)).scalar_one() == "before"
