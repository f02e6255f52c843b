from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from auth_service.common_passwords import is_address, is_common
from auth_service.config import AuthSettings
from auth_service.passwords import PasswordHasher
from tests.support import ROOT


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


async def test_hashing_does_not_block_the_event_loop(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash waits, in its thread, for a flag only the event loop can raise: were it run
    on the loop's thread, the loop could never raise it. No timing, no core count."""
    loop = asyncio.get_running_loop()
    hash_started = asyncio.Event()
    loop_may_go_on = threading.Event()
    threads: list[str] = []
    real_hash = hasher._hash

    def gated_hash(secret: bytes) -> str:
        threads.append(threading.current_thread().name)
        loop.call_soon_threadsafe(hash_started.set)
        assert loop_may_go_on.wait(30), "the event loop did not run while hashing"
        return real_hash(secret)

    monkeypatch.setattr(hasher, "_hash", gated_hash)
    hashing = asyncio.create_task(hasher.hash("correct horse battery"))
    await asyncio.wait_for(hash_started.wait(), 30)  # the loop turns while the hash waits
    loop_may_go_on.set()
    stored = await hashing
    assert stored.startswith("$argon2id$")
    assert threads == [threads[0]] and threads[0].startswith("argon2")


async def test_memory_goes_back_once_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("auth_service.passwords.IDLE_TRIM_SECONDS", 0.2)
    hasher = PasswordHasher(AuthSettings())
    assert hasher._trim is not None  # glibc here: the real malloc_trim is found
    trims: list[int] = []
    monkeypatch.setattr(hasher, "_trim", lambda: trims.append(1))
    try:
        stored = await hasher.hash("a passphrase")
        await asyncio.gather(*(hasher.verify("a passphrase", stored) for _ in range(3)))
        assert trims == []  # not during the burst
        for _ in range(200):  # a loaded machine may be slow to run the pool's thread
            if trims:
                break
            await asyncio.sleep(0.05)
        assert trims == [1]  # once after it, on the pool's thread
        await asyncio.sleep(0.3)
        assert trims == [1]  # and not again while nothing happens
    finally:
        hasher.close()


MEMORY_SCRIPT = """
import asyncio
from auth_service.common_passwords import is_address, is_common
from auth_service.config import AuthSettings
from auth_service import passwords
from common import memory
from common.memory import resident_mb as rss

async def main() -> None:
    memory.one_malloc_arena()
    passwords.IDLE_TRIM_SECONDS = 0.1
    # One thread: with two, glibc's own threshold (twice the biggest freed block) may
    # already trim mid-burst, and this test would see nothing to give back.
    hasher = passwords.PasswordHasher(AuthSettings(hash_workers=1))
    stored = await hasher.hash("a passphrase")
    await asyncio.gather(*(hasher.verify("a passphrase", stored) for _ in range(4)))
    busy = rss()
    for _ in range(100):
        await asyncio.sleep(0.1)
        if rss() < busy - 10:
            break
    print(busy, rss())

asyncio.run(main())
"""


def test_argon2_buffers_leave_the_process_once_idle() -> None:
    """The real thing: a 19 MiB buffer per hashing thread is resident after a burst and
    gone once the pool has been idle (one malloc arena + malloc_trim)."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    busy, idle = map(float, done.stdout.split())
    assert idle < busy - 10, (busy, idle)


async def test_a_password_too_long_once_normalised_matches_nothing(hasher: PasswordHasher) -> None:
    """1,024 code points fit the schemas' length but not passlib's 4,096 bytes once
    normalised; at login such a password is simply wrong (it was never storable)."""
    stored = await hasher.hash("correct horse battery")
    assert await hasher.verify("\ufdfa" * 130, stored) == (False, None)
    await hasher.verify_dummy("\ufdfa" * 130)  # no PasswordSizeError either


def test_the_most_common_passwords_are_known_in_any_case_or_width() -> None:
    listed = (ROOT / "auth_service/data/common_passwords.txt").read_text().splitlines()
    words = [line for line in listed if line and not line.startswith("#")]
    assert len(words) == 11_611 and min(map(len, words)) == 8
    assert all(is_common(word) for word in (words[0], words[len(words) // 2], words[-1]))
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "Password123")  # NFKC: Password123
    assert is_common("PASSWORD123") and is_common(fullwidth)
    for fine in ("correct horse battery staple", "password1234567", "a perfectly fine passphrase"):
        assert not is_common(fine)


def test_the_address_or_its_local_part_is_no_password() -> None:
    assert is_address("Ann.Lee@Example.com", "ann.lee@example.com")
    assert is_address("ANN.LEE", "ann.lee@example.com")
    assert not is_address("ann.lee.2024", "ann.lee@example.com")
