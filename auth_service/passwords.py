"""argon2id hashing, run on a bounded thread pool so it never blocks the event loop.

Each hash fills a 19 MiB buffer (the memory cost). glibc keeps such freed blocks for the
next hash, which is right during a burst of logins and wasteful after it: an idle auth
would hold one buffer per hashing thread for good. So once no hash has run for
IDLE_TRIM_SECONDS, the pool hands the free memory back to the system (`malloc_trim`).
`malloc_trim` cannot shrink the top of a thread's own arena, where a hashing thread's
buffer would sit, so auth starts with `common.memory.one_malloc_arena()`, before any thread exists:
every thread then allocates from the main arena, whose top it does shrink. Hashing is
no slower for it (one allocation per hash).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, TypeVarTuple

from passlib.context import CryptContext

from auth_service.config import AuthSettings
from common.memory import trim_function

R = TypeVar("R")
Ts = TypeVarTuple("Ts")
IDLE_TRIM_SECONDS = 2.0
# passlib refuses a longer secret. A password within its 1,024 code points can exceed it
# once normalised and encoded (one U+FDFA is 33 bytes in NFKC), so the schemas check it.
MAX_PASSWORD_BYTES = 4096


def _usable_cpus() -> int:
    """The cores this process may run on (Linux: its affinity), else the machine's."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def normalize(password: str) -> bytes:
    # NIST SP 800-63B: normalize Unicode so the same password typed on two keyboards matches.
    return unicodedata.normalize("NFKC", password).encode()


class PasswordHasher:
    def __init__(self, settings: AuthSettings) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=settings.argon2_memory_kib,
            argon2__rounds=settings.argon2_time_cost,
            argon2__parallelism=settings.argon2_parallelism,
        )
        # argon2 releases the GIL: one worker per core this process may run on (its CPU
        # affinity, not the machine's count) is all the parallelism there is; more only
        # thrash the caches with 19 MiB buffers and hold more memory.
        workers = settings.hash_workers or _usable_cpus()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._dummy_hash: str = self._context.hash(secrets.token_hex(16))
        self._trim = trim_function()
        self._running = 0
        self._idle: asyncio.TimerHandle | None = None

    async def _run(self, fn: Callable[[*Ts], R], *args: *Ts) -> R:
        loop = asyncio.get_running_loop()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._running += 1
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self._running -= 1
            if not self._running and self._trim is not None:
                self._idle = loop.call_later(IDLE_TRIM_SECONDS, self._give_back)

    def _give_back(self) -> None:
        self._idle = None
        if self._trim is not None and not self._running:
            self._pool.submit(self._trim)  # off the event loop: it walks every arena

    @property
    def unusable_hash(self) -> str:
        """A well-formed hash that no password matches: its secret was random and is gone."""
        return self._dummy_hash

    def _hash(self, secret: bytes) -> str:
        stored: str = self._context.hash(secret)
        return stored

    def _verify(self, secret: bytes, stored: str) -> tuple[bool, str | None]:
        ok, upgraded = self._context.verify_and_update(secret, stored)
        return bool(ok), upgraded

    async def hash(self, password: str) -> str:
        return await self._run(self._hash, normalize(password))

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one uses outdated parameters). A password too
        long to have been stored matches nothing, in the time of a real verify."""
        secret = normalize(password)
        if len(secret) > MAX_PASSWORD_BYTES:
            await self.verify_dummy(password)
            return False, None
        return await self._run(self._verify, secret, password_hash)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verify, so an unknown email answers no faster."""
        secret = normalize(password)[:MAX_PASSWORD_BYTES]
        await self._run(self._verify, secret, self._dummy_hash)

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
