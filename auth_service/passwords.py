"""argon2id hashing, run on a bounded thread pool so it never blocks the event loop."""

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

R = TypeVar("R")
Ts = TypeVarTuple("Ts")


def _normalize(password: str) -> bytes:
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
        workers = settings.hash_workers or len(os.sched_getaffinity(0)) or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._dummy_hash = self._context.hash(secrets.token_hex(16))

    async def _run(self, fn: Callable[[*Ts], R], *args: *Ts) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _hash(self, secret: bytes) -> str:
        stored: str = self._context.hash(secret)
        return stored

    def _verify(self, secret: bytes, stored: str) -> tuple[bool, str | None]:
        ok, upgraded = self._context.verify_and_update(secret, stored)
        return bool(ok), upgraded

    async def hash(self, password: str) -> str:
        return await self._run(self._hash, _normalize(password))

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one uses outdated parameters)."""
        return await self._run(self._verify, _normalize(password), password_hash)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verify, so an unknown email answers no faster."""
        await self._run(self._verify, _normalize(password), self._dummy_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
