"""Per-client-IP and per-account rate limits: 429 with Retry-After past a limit.

Counted by the `limits` library in moving windows: exact, as every hit is kept for the
window's length (a sliding-window counter's estimate lets a burst that straddles two
windows through). With AUTH_REDIS_URL the counters live in Redis, shared by every auth
instance and worker, so two instances do not double a limit; without it, in the process.
If Redis stops answering, this instance counts in its own memory instead (logged, counted
in `auth_ratelimit_redis_failures_total`, `redis: down` in /readyz) and goes back to Redis
once it answers: a Redis outage never becomes a 5xx. Lockout and the code budget
(throttle.py) live in the database and stay on whatever happens here.

The same Redis tells the instances' DPoP proofs apart (`once`), so that one proof is
taken once by all of them, not once by each (common/dpop.py keeps each process's own).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from coredis.tokens import PureToken
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter

from auth_service.errors import RateLimited

log = logging.getLogger(__name__)

REDIS_FAILURES = Counter(
    "auth_ratelimit_redis_failures_total", "Rate-limit checks counted in memory: Redis failed"
)
REDIS_TIMEOUT = 0.5  # seconds a check may wait for Redis before counting in memory
REDIS_RETRY = 5.0  # after a failure, Redis is tried again this much later


@dataclass(frozen=True)
class Limit:
    requests: int
    seconds: float

    @property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.requests, max(1, round(self.seconds)))


class RateLimiter:
    def __init__(
        self, enabled: bool = True, redis_url: str | None = None, key_prefix: str = "auth"
    ) -> None:
        self.enabled = enabled
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._redis_storage: Storage | None = None
        self._redis: MovingWindowRateLimiter | None = None
        if redis_url:
            self._redis_storage = RedisStorage(
                f"async+{redis_url}", key_prefix=key_prefix, wrap_exceptions=True
            )
            self._redis = MovingWindowRateLimiter(self._redis_storage)
        self._redis_down_until = 0.0

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def hit(self, scope: str, key: str, limit: Limit) -> None:
        """Count one request; raise RateLimited (429 + Retry-After) past the limit."""
        await self._ask(scope, key, limit, counted=True)

    async def check(self, scope: str, key: str, limit: Limit) -> None:
        """Raise RateLimited where the limit is spent, without counting this request: for
        a budget of failures, which `hit` counts once one happens."""
        await self._ask(scope, key, limit, counted=False)

    async def once(self, scope: str, key: str, seconds: int) -> bool:
        """Whether `key` is new in `scope` to every instance sharing Redis, which keeps it
        `seconds`: False when one of them saw it within that time. True without Redis,
        and from a failure on for REDIS_RETRY seconds (as for the limits: never a 5xx),
        when each process's own memory is all there is. Asked whether the limits are on
        or not."""
        storage = self._redis_storage
        if not isinstance(storage, RedisStorage):
            return True
        # One atomic SET NX EX, which `limits` has no call for (its INCR and EXPIRE are two
        # round trips: a timeout between them would keep the key for good). Its bridge
        # holds the client (coredis, as in `disconnect`).
        bridge: Any = storage.bridge

        async def claim() -> bool:
            named = bridge.prefixed_key(f"{scope}/{key}")
            return bool(
                await bridge.get_connection().set(named, "1", condition=PureToken.NX, ex=seconds)
            )

        return await self._in_redis(claim) is not False

    async def _ask(self, scope: str, key: str, limit: Limit, *, counted: bool) -> None:
        """`_within` against Redis where there is one and it answers, else this process's
        counters."""
        if not self.enabled:
            return
        item = limit.item
        redis = self._redis
        if redis is not None and await self._in_redis(
            lambda: self._within(redis, item, scope, key, counted)
        ):
            return
        await self._within(self._memory, item, scope, key, counted)

    async def _in_redis(self, ask: Callable[[], Awaitable[bool]]) -> bool | None:
        """`ask()`'s answer, where Redis is to be asked and answers within REDIS_TIMEOUT;
        None where it is not (a failure in the last REDIS_RETRY seconds) or fails now.
        RateLimited passes through."""
        if time.monotonic() < self._redis_down_until:
            return None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                return await ask()
        except RateLimited:
            raise
        except Exception as exc:  # whatever the Redis client raises, never a 5xx
            # Not only StorageError, OSError and the timeout: a command cut short by the
            # timeout leaves its connection closed under the client, which then raises
            # uvloop's RuntimeError on every later use of it.
            self._redis_failed(exc)
            return None

    @staticmethod
    async def _within(
        strategy: MovingWindowRateLimiter, item: RateLimitItem, scope: str, key: str, counted: bool
    ) -> bool:
        """True within the limit, RateLimited past it; the request counted (`hit`) or not
        (`test`)."""
        if await (strategy.hit if counted else strategy.test)(item, scope, key):
            return True
        reset_at, _ = await strategy.get_window_stats(item, scope, key)
        raise RateLimited(max(1, math.ceil(reset_at - time.time())))

    def _redis_failed(self, exc: BaseException) -> None:
        REDIS_FAILURES.inc()
        if time.monotonic() >= self._redis_down_until:
            log.warning(
                "rate limits: Redis failed (%r); counting in this process for %.0fs",
                exc,
                REDIS_RETRY,
            )
        self._redis_down_until = time.monotonic() + REDIS_RETRY
        self.close()  # connections a failure may have left half-used: the retry opens anew

    def close(self) -> None:
        if isinstance(self._redis_storage, RedisStorage):
            disconnect(self._redis_storage)

    async def redis_ok(self) -> bool:
        """For /readyz: does Redis answer (True when there is none to ask)?"""
        if self._redis_storage is None:
            return True
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):
                return bool(await self._redis_storage.check())
        except Exception:  # as in hit(): any failure means "not answering"
            return False


def disconnect(storage: RedisStorage) -> None:
    """Close a Redis storage's connections: `limits` has no call for it, so this reaches
    the client its bridge holds (coredis, the default implementation)."""
    client: Any = getattr(storage.bridge, "storage", None)
    if client is not None:
        client.connection_pool.disconnect()


def ip_key(address: str) -> str:
    """What a per-IP limit counts by: the address, or for IPv6 its /64. One host is
    handed a whole /64 (SLAAC, privacy addresses), so counting single IPv6 addresses
    would let one client use 2^64 budgets."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown", or a test client's name
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


# Per client IP: generous for people behind one NAT, tight for a script.
PER_IP = {
    "signup": Limit(20, 60),
    "verify": Limit(30, 60),
    "resend": Limit(10, 60),
    "login": Limit(30, 60),
    "forgot": Limit(10, 60),
    "reset": Limit(30, 60),
    "refresh": Limit(120, 60),
    "login_code": Limit(10, 60),
    "login_code_verify": Limit(30, 60),
    "email_change": Limit(10, 60),
    # Behind a token, but each checks a password or a code (and hashes).
    "reauth": Limit(10, 60),
    "email_change_confirm": Limit(30, 60),
    "mfa_login": Limit(30, 60),
    "mfa_confirm": Limit(30, 60),
    # Each hands out a challenge row (swept once expired); a sign-in checks a signature.
    "passkey_options": Limit(30, 60),
    "passkey_login": Limit(30, 60),
    "passkey_add": Limit(10, 60),
    # Codes are random and live a minute; this bounds a client that retries in a loop.
    "oauth_token": Limit(60, 60),
    # Each pushed authorization request is a row until it expires: here a public
    # client's (anyone may push as one; a confidential client's count per client).
    "par": Limit(60, 60),
    # DPoP proofs at the token endpoint, before any is checked: a signature each, and
    # remembered for a minute (common/dpop.py); far above what one address's clients ask.
    "dpop": Limit(600, 60),
    # Wrong client secrets, per address and client_id (unknown ids share one count),
    # wherever a secret is checked: a budget of guesses, checked before each attempt and
    # spent by each failure.
    "client_auth": Limit(30, 60),
}
# Per account (the email): a six-digit code or a password is guessed one account at a time.
PER_ACCOUNT = {
    # Each sign-up may email the address (a code, or "account exists"): as resend.
    "signup": Limit(5, 3600),
    "verify": Limit(10, 600),
    "reset": Limit(10, 600),
    "resend": Limit(5, 3600),
    "forgot": Limit(5, 3600),
    "login": Limit(10, 60),
    "login_code": Limit(5, 3600),
    "login_code_verify": Limit(10, 600),
    "email_change": Limit(5, 3600),
    "reauth": Limit(10, 600),
    "email_change_confirm": Limit(10, 600),
    "mfa_confirm": Limit(10, 600),
}


# Per OAuth client, once it proved itself: a service may introspect on each request it
# serves, and asks for a token of its own when the last one is about to expire, so only a
# runaway one meets these.
PER_CLIENT = {
    "introspect": Limit(6000, 60),
    "client_token": Limit(600, 60),
    # An application's server pushes a request for each person it sends to sign in,
    # with a DPoP proof each where it binds its codes.
    "par": Limit(6000, 60),
    "dpop": Limit(6000, 60),
}


def configured(overrides: dict[str, tuple[int, float]]) -> dict[str, dict[str, Limit]]:
    """The limits in force: the defaults above, with AUTH_RATE_LIMITS overrides applied,
    keyed "ip:<action>", "account:<action>" or "client:<action>" -> [requests, seconds]."""
    limits = {
        "ip": dict(PER_IP),
        "account": dict(PER_ACCOUNT),
        "client": dict(PER_CLIENT),
    }
    known = {"ip": PER_IP, "account": PER_IP, "client": PER_CLIENT}
    for key, (requests, seconds) in overrides.items():
        scope, _, action = key.partition(":")
        if scope not in known or action not in known[scope]:
            raise ValueError(f"AUTH_RATE_LIMITS: unknown limit {key!r}")
        limits[scope][action] = Limit(int(requests), float(seconds))
    return limits
