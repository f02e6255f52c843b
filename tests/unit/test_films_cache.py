"""The films response cache: bounded, expiring, and never refilled with a read that a
write overtook; the version row that tells every process to clear it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete

from common.db import make_engine, make_sessionmaker, migrate
from films_service.cache import ResponseCache, VersionWatch, bump_version, cached
from films_service.models import Base, CatalogueVersion


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_hit_until_it_expires() -> None:
    clock = Clock()
    cache = ResponseCache(ttl=10, max_bytes=1000, clock=clock)
    cache.put("a", b"one", cache.generation)
    assert cache.get("a") == b"one"
    clock.now = 9.9
    assert cache.get("a") == b"one"
    clock.now = 10
    assert cache.get("a") is None
    assert len(cache) == 0


def test_bounded_in_bytes_least_recently_used_first() -> None:
    cache = ResponseCache(ttl=60, max_bytes=10)
    for key in "abc":
        cache.put(key, b"xxxx", cache.generation)  # 12 bytes: "a" goes
    assert cache.get("a") is None
    assert cache.get("b") == b"xxxx"  # now the most recent
    cache.put("d", b"xxxx", cache.generation)  # "c" goes, not "b"
    assert cache.get("c") is None
    assert cache.get("b") == cache.get("d") == b"xxxx"
    cache.put("big", b"x" * 11, cache.generation)  # larger than the whole cache: not kept
    assert cache.get("big") is None
    assert cache.get("b") == b"xxxx"


def test_a_read_overtaken_by_a_clear_is_not_kept() -> None:
    cache = ResponseCache(ttl=60, max_bytes=1000)
    started = cache.generation
    cache.clear()  # a write committed while the read was in flight
    cache.put("a", b"stale", started)
    assert cache.get("a") is None


def test_ttl_zero_turns_it_off() -> None:
    cache = ResponseCache(ttl=0, max_bytes=1000)
    cache.put("a", b"one", cache.generation)
    assert cache.get("a") is None


async def test_cached_renders_once() -> None:
    cache = ResponseCache(ttl=60, max_bytes=1000)
    calls = 0

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        return b"body"

    assert await cached(cache, "k", render) == await cached(cache, "k", render) == b"body"
    assert calls == 1


@pytest.mark.parametrize("changes", [0, 1, 3])
async def test_the_watch_clears_when_the_version_moves(tmp_path: Path, changes: int) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/films.db")
    try:
        await migrate(engine, Base)
        sessions = make_sessionmaker(engine)
        cache = ResponseCache(ttl=60, max_bytes=1000)
        watch = VersionWatch(cache, sessions, interval=1)
        await watch.check()
        cache.put("a", b"one", cache.generation)
        for _ in range(changes):  # a write in another process
            async with sessions.begin() as session:
                await bump_version(session)
        await watch.check()
        assert (cache.get("a") is None) == (changes > 0)
    finally:
        await engine.dispose()


async def test_a_missing_version_row_is_made_by_the_next_write(tmp_path: Path) -> None:
    """A schema built by hand may lack the row: the first write makes it, and the watch
    of another process sees the number move."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/films.db")
    try:
        await migrate(engine, Base)
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as session:
            await session.execute(delete(CatalogueVersion))
        cache = ResponseCache(ttl=60, max_bytes=1000)
        watch = VersionWatch(cache, sessions, interval=1)
        await watch.check()
        cache.put("a", b"one", cache.generation)
        async with sessions.begin() as session:
            await bump_version(session)
        await watch.check()
        assert cache.get("a") is None
    finally:
        await engine.dispose()
