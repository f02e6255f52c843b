"""The catalogue's read responses, serialized once and kept in the process.

Every write bumps `catalogue_version.version` in the same transaction as the change and
clears the cache of the process that made it, so an admin reads their own write at once.
Every other process (other workers, other instances) polls that one row every
`FILMS_CACHE_CHECK_SECONDS` and clears its cache when the number moves: a change is
visible everywhere within about that long, whether or not Kafka is up, and a missed poll
cannot lose a change because the number only grows. Entries also expire after
`FILMS_CACHE_SECONDS`, a backstop for a database edited by hand.

A reader that started before a clear cannot put back what it read: each `put` carries the
generation its read started in, and a clear starts a new generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from films_service.models import CatalogueVersion

log = logging.getLogger(__name__)


class ResponseCache:
    """A least-recently-used map of request key to response bytes, bounded in bytes."""

    def __init__(
        self,
        ttl: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.generation = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, body = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return body

    def put(self, key: Hashable, body: bytes, generation: int) -> None:
        """Keep `body` unless the cache was cleared since `generation` was read."""
        if generation != self.generation or self.ttl <= 0 or len(body) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.ttl, body)
        self._bytes += len(body)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: Hashable) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= len(body)


async def cached(
    cache: ResponseCache, key: Hashable, render: Callable[[], Awaitable[bytes]]
) -> bytes:
    """The cached response for `key`, or `render()`'s, kept for the next caller."""
    body = cache.get(key)
    if body is None:
        generation = cache.generation
        body = await render()
        cache.put(key, body, generation)
    return body


async def bump_version(session: AsyncSession) -> None:
    """Mark the catalogue changed, in the caller's transaction (before its commit). The
    row is made if it is missing (a schema built by hand), so a write is never unseen."""
    raised = await session.execute(
        update(CatalogueVersion).values(version=CatalogueVersion.version + 1)
    )
    if not raised.rowcount:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
        session.add(CatalogueVersion(id=1, version=1))


async def read_version(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return await session.scalar(select(CatalogueVersion.version)) or 0


class VersionWatch:
    """Clears `cache` whenever the catalogue's version moves (polled every `interval`)."""

    def __init__(
        self, cache: ResponseCache, sessions: async_sessionmaker[AsyncSession], interval: float
    ) -> None:
        self.cache = cache
        self.sessions = sessions
        self.interval = interval
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        version = await read_version(self.sessions)
        if self._seen is not None and version != self._seen:
            self.cache.clear()
        self._seen = version

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="films-cache-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.check()
                if failing:
                    log.info("catalogue version readable again")
                failing = False
            except Exception as exc:  # the database is down: entries still expire by TTL
                if not failing:
                    log.warning("cannot read the catalogue version: %r", exc)
                failing = True
            await asyncio.sleep(self.interval)
