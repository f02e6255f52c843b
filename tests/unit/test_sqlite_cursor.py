"""The one-hop SQLite cursor (common/sqlite.py) answers as SQLAlchemy's own does: rows,
RETURNING, rowcount, lastrowid, executemany, and errors as SQLAlchemy exceptions; and its
transactions isolate their reads from another process's writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import UTCDateTime, make_engine
from common.sqlite import write_in_one_hop

META = MetaData()
THINGS = Table(
    "things", META, Column("id", Integer, primary_key=True), Column("name", String, unique=True)
)
STAMPS = Table(
    "stamps",
    META,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True),
    Column("at", UTCDateTime, default=lambda: datetime.now(UTC)),
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


async def test_a_connection_goes_back_without_a_hop_unless_a_transaction_is_open(
    processes: tuple[AsyncEngine, AsyncEngine], hops: Hops
) -> None:
    """The pool rolls back every connection it takes back; where no transaction is open
    that costs no hop. Where one is (a write never committed, a statement that failed),
    the rollback still runs: the write is gone and the other process can write."""
    one, other = processes
    names = select(THINGS.c.name).order_by(THINGS.c.id)
    hops.n = 0
    async with one.connect() as conn:
        await conn.execute(names)
    assert hops.n == 1  # the read alone
    hops.n = 0
    async with one.begin() as conn:
        await conn.execute(insert(THINGS).values(name="kept"))
    assert hops.n == 2  # the insert and the commit
    async with one.connect() as conn:
        await conn.execute(insert(THINGS).values(name="never committed"))
    with pytest.raises(IntegrityError):
        async with one.connect() as conn:
            await conn.execute(insert(THINGS).values(name="first of two"))
            await conn.execute(insert(THINGS).values(name="kept"))

    async def write_elsewhere() -> None:
        async with other.begin() as conn:
            await conn.execute(insert(THINGS).values(name="other"))

    await asyncio.wait_for(write_elsewhere(), 10)  # a lock left held would time this out
    async with one.connect() as conn:
        assert (await conn.execute(names)).scalars().all() == ["kept", "other"]


async def test_a_group_of_writes_in_one_hop(tmp_path: Path, hops: Hops) -> None:
    """write_in_one_hop stores what SQLAlchemy would (types processed, the same values
    read back), commits in the same hop, and on an error writes nothing at all."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    at = datetime(2026, 11, 24, 17, 30, 1, 123456, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(META.create_all)
        hops.n = 0
        await write_in_one_hop(
            engine,
            [
                (insert(THINGS), [{"name": "a"}, {"name": "b"}]),
                (insert(STAMPS), [{"name": "a", "at": at}]),
            ],
        )
        assert hops.n == 1
        with pytest.raises(sqlite3.IntegrityError):
            await write_in_one_hop(
                engine,
                [(insert(THINGS), [{"name": "c"}]), (insert(STAMPS), [{"name": "a", "at": at}])],
            )
        with pytest.raises(ValueError, match="at"):  # a column left to its default
            await write_in_one_hop(engine, [(insert(STAMPS), [{"name": "d"}])])
        async with engine.connect() as conn:
            names = (await conn.execute(select(THINGS.c.name).order_by(THINGS.c.id))).scalars()
            assert names.all() == ["a", "b"]  # not "c": its transaction was rolled back
            assert (await conn.execute(select(STAMPS.c.at))).scalar_one() == at
    finally:
        await engine.dispose()


async def test_errors_do_not_show_the_values(tmp_path: Path) -> None:
    """A failed statement's error, which goes to the log, names no value: they may be a
    one-time code in the outbox's payload or a password hash."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(META.create_all)
            await conn.execute(insert(THINGS).values(name="code 123456"))
        with pytest.raises(IntegrityError) as error:
            async with engine.begin() as conn:
                await conn.execute(insert(THINGS).values(name="code 123456"))
        assert "123456" not in str(error.value)
        assert "hidden" in str(error.value)  # SQLAlchemy's words for hidden parameters
    finally:
        await engine.dispose()


async def test_a_streamed_write_left_open_is_still_rolled_back(
    processes: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """SQLAlchemy's streaming cursor is not ours and records nothing: after it, the
    connection's state is unknown, so its return is a real rollback."""
    one, other = processes
    async with one.connect() as conn:
        await conn.execute(select(THINGS.c.id))  # known idle from here...
        streamed = await conn.stream(insert(THINGS).values(name="streamed").returning(THINGS.c.id))
        assert len([row async for row in streamed]) == 1  # ...but no longer: never committed

    async def write_elsewhere() -> None:
        async with other.begin() as conn:
            await conn.execute(insert(THINGS).values(name="other"))

    await asyncio.wait_for(write_elsewhere(), 10)  # a lock left held would time this out
    async with one.connect() as conn:
        assert (await conn.execute(select(THINGS.c.name))).scalars().all() == ["other"]
