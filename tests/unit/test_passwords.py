from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from auth_service.config import AuthSettings
from auth_service.passwords import PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> Iterator[PasswordHasher]:
    h = PasswordHasher(AuthSettings())
    yield h
    h.close()


async def test_argon2id_with_owasp_parameters(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await hasher.verify("correct horse battery", stored) == (True, None)
    assert (await hasher.verify("correct horse batterY", stored))[0] is False


async def test_unicode_is_normalised(hasher: PasswordHasher) -> None:
    composed, decomposed = "pässwörd-ok", "pa\u0308sswo\u0308rd-ok"
    stored = await hasher.hash(composed)
    assert (await hasher.verify(decomposed, stored))[0] is True


async def test_outdated_parameters_are_upgraded(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery")
    stronger = PasswordHasher(AuthSettings(argon2_memory_kib=32 * 1024, argon2_time_cost=3))
    try:
        ok, upgraded = await stronger.verify("correct horse battery", stored)
    finally:
        stronger.close()
    assert ok and upgraded is not None
    assert "m=32768,t=3" in upgraded


def test_weaker_than_owasp_is_refused() -> None:
    with pytest.raises(ValueError):
        AuthSettings(argon2_memory_kib=4096)


async def test_hashing_does_not_block_the_event_loop(hasher: PasswordHasher) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(hasher.hash("correct horse battery") for _ in range(4)))
    elapsed = time.perf_counter() - started
    task.cancel()
    # The loop kept turning while argon2 ran: far more ticks than hashes.
    assert ticks > 10 * 4, (ticks, elapsed)
