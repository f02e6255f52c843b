"""The rate limiter on the `limits` library: 429 with Retry-After past a limit, counters
shared through the machine's real Redis, and a Redis outage that only costs sharing."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import uvloop
from limits.aio.storage import RedisStorage

from auth_service import ratelimit
from auth_service.errors import RateLimited
from auth_service.ratelimit import (
    PER_IP,
    REDIS_FAILURES,
    Limit,
    RateLimiter,
    configured,
    disconnect,
    ip_key,
)
from infra.ports import free_port
from tests.support import service_missing
from tests.tcp_relay import TcpRelay

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the real Redis, its keys removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    storage = RedisStorage(f"async+{REDIS_URL}", key_prefix=name, wrap_exceptions=True)
    if not await storage.check():
        service_missing("Redis", f"{REDIS_URL} does not answer; set TEST_REDIS_URL to use another")
    try:
        yield name
    finally:
        await storage.reset()
        disconnect(storage)


async def test_allows_the_limit_then_refuses_with_retry_after() -> None:
    limiter = RateLimiter()
    for _ in range(3):
        await limiter.hit("ip:login", "1.2.3.4", Limit(3, 60))
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("ip:login", "1.2.3.4", Limit(3, 60))
    assert 1 <= refused.value.retry_after <= 60


async def test_keys_and_scopes_are_independent() -> None:
    limiter = RateLimiter()
    await limiter.hit("login", "a", Limit(1, 60))
    await limiter.hit("login", "b", Limit(1, 60))
    await limiter.hit("verify", "a", Limit(1, 60))
    with pytest.raises(RateLimited):
        await limiter.hit("login", "a", Limit(1, 60))


async def spend_a_budget_of_failures(limiter: RateLimiter) -> None:
    """Checked before each attempt, spent by the failures alone."""
    budget = Limit(2, 60)
    for _ in range(5):
        await limiter.check("ip:client_auth", "k", budget)
    await limiter.hit("ip:client_auth", "k", budget)
    await limiter.check("ip:client_auth", "k", budget)
    await limiter.hit("ip:client_auth", "k", budget)
    with pytest.raises(RateLimited) as refused:
        await limiter.check("ip:client_auth", "k", budget)
    assert 1 <= refused.value.retry_after <= 60
    await limiter.check("ip:client_auth", "another", budget)
    limiter.close()


async def test_a_check_counts_nothing_and_refuses_once_hits_spent_the_budget() -> None:
    await spend_a_budget_of_failures(RateLimiter())


async def test_a_check_reads_the_counts_in_redis(prefix: str) -> None:
    await spend_a_budget_of_failures(RateLimiter(redis_url=REDIS_URL, key_prefix=prefix))


async def test_disabled_never_refuses() -> None:
    limiter = RateLimiter(enabled=False)
    for _ in range(100):
        await limiter.hit("s", "k", Limit(1, 60))


async def test_two_limiters_on_one_redis_share_the_counters(prefix: str) -> None:
    """Two auth instances: together they allow the limit once, not twice."""
    first, second = (RateLimiter(redis_url=REDIS_URL, key_prefix=prefix) for _ in range(2))
    assert first.shared and await first.redis_ok()
    await first.hit("ip:login", "10.0.0.1", Limit(4, 60))
    await second.hit("ip:login", "10.0.0.1", Limit(4, 60))
    await first.hit("ip:login", "10.0.0.1", Limit(4, 60))
    await second.hit("ip:login", "10.0.0.1", Limit(4, 60))
    for limiter in (first, second):
        with pytest.raises(RateLimited):
            await limiter.hit("ip:login", "10.0.0.1", Limit(4, 60))
        limiter.close()


async def test_without_redis_it_counts_in_memory_and_never_fails() -> None:
    """Nothing listens at the URL: every check still answers, from this process's counts."""
    limiter = RateLimiter(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    failures = REDIS_FAILURES._value.get()
    await limiter.hit("ip:login", "10.0.0.2", Limit(2, 60))
    await limiter.hit("ip:login", "10.0.0.2", Limit(2, 60))
    with pytest.raises(RateLimited):
        await limiter.hit("ip:login", "10.0.0.2", Limit(2, 60))
    assert REDIS_FAILURES._value.get() > failures
    assert await limiter.redis_ok() is False
    limiter.close()


async def test_a_dpop_proof_is_new_once_to_every_instance(prefix: str) -> None:
    """`once`: the first instance to ask takes the key, the other hears it was seen, even
    with the limits off (replays are no rate limit); the key lapses after its seconds."""
    first, second = (
        RateLimiter(enabled=False, redis_url=REDIS_URL, key_prefix=prefix) for _ in range(2)
    )
    assert await first.once("dpop", "proof-a", 1) is True
    assert await second.once("dpop", "proof-a", 1) is False
    assert await first.once("dpop", "proof-a", 1) is False
    assert await second.once("dpop", "proof-b", 1) is True
    assert await first.once("other", "proof-a", 1) is True  # scopes apart
    await asyncio.sleep(1.5)  # Redis expires the key after its second
    assert await second.once("dpop", "proof-a", 1) is True
    for limiter in (first, second):
        limiter.close()


async def test_without_redis_every_proof_is_new_here() -> None:
    """Without Redis, or while it fails, `once` leaves the proofs to each process's own
    memory (common/dpop.py): True, and no error."""
    assert await RateLimiter().once("dpop", "proof", 60) is True
    dead = RateLimiter(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    failures = REDIS_FAILURES._value.get()
    assert await dead.once("dpop", "proof", 60) is True
    assert await dead.once("dpop", "proof", 60) is True
    assert REDIS_FAILURES._value.get() == failures + 1  # then not asked for REDIS_RETRY s
    dead.close()


def test_a_redis_command_cut_short_by_the_timeout_is_no_500(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a check can outlast the timeout. Cutting short a new connection's
    handshake left it closed under the Redis client, which on the services' loop (uvloop)
    then raised RuntimeError when used: a 500 on limited endpoints (seen in CI on a slow
    machine). Now any failure of the Redis path counts as a Redis failure, the connections
    are dropped, and the next check after the retry delay counts in Redis again."""
    monkeypatch.setattr(ratelimit, "REDIS_RETRY", 0.0)
    redis = urlsplit(REDIS_URL)

    async def scenario(relay: TcpRelay) -> None:
        through_relay = f"redis://127.0.0.1:{relay.port}{redis.path}"
        first = RateLimiter(redis_url=through_relay, key_prefix=prefix)
        second = RateLimiter(redis_url=REDIS_URL, key_prefix=prefix)
        try:
            relay.hold()  # the client's first connection: its handshake goes unanswered
            monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT", 0.2)
            for _ in range(2):  # both cut short, both counted in memory
                await first.hit("ip:login", "cut-short", Limit(10, 60))
            relay.release()
            monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT", 10.0)  # a slow machine is no failure
            await first.hit("ip:login", "10.0.0.3", Limit(2, 60))
            await first.hit("ip:login", "10.0.0.3", Limit(2, 60))
            with pytest.raises(RateLimited):  # so both were counted in Redis
                await second.hit("ip:login", "10.0.0.3", Limit(2, 60))
        finally:
            first.close()
            second.close()

    with (
        TcpRelay(redis.port or 6379, redis.hostname or "127.0.0.1") as relay,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(scenario(relay))


def test_limits_are_configurable_and_misspellings_refused() -> None:
    limits = configured({"ip:login": (3, 10), "account:forgot": (1, 60)})
    assert limits["ip"]["login"] == Limit(3, 10)
    assert limits["account"]["forgot"] == Limit(1, 60)
    assert limits["ip"]["verify"] == PER_IP["verify"]
    with pytest.raises(ValueError):
        configured({"ip:logn": (3, 10)})
    assert configured({"client:introspect": (5, 1)})["client"]["introspect"] == Limit(5, 1)
    with pytest.raises(ValueError):
        configured({"client:login": (3, 10)})  # no client budget of that name


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same client
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # another
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 in IPv6 clothing
        ("unknown", "unknown"),
    ],
)
def test_ipv6_clients_are_counted_by_their_64(address: str, key: str) -> None:
    assert ip_key(address) == key
