from __future__ import annotations

import pytest

from auth_service.errors import RateLimited
from auth_service.ratelimit import Limit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_the_limit_then_refuses_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.hit("login", "1.2.3.4", Limit(3, 60))
    with pytest.raises(RateLimited) as refused:
        limiter.hit("login", "1.2.3.4", Limit(3, 60))
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60  # type: ignore[index]


def test_keys_and_scopes_are_independent() -> None:
    limiter = RateLimiter(clock=Clock())
    limiter.hit("login", "a", Limit(1, 60))
    limiter.hit("login", "b", Limit(1, 60))
    limiter.hit("verify", "a", Limit(1, 60))
    with pytest.raises(RateLimited):
        limiter.hit("login", "a", Limit(1, 60))


def test_the_window_slides() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(10):
        limiter.hit("s", "k", Limit(10, 60))
    clock.now += 60  # a full window later the old hits still weigh fully
    with pytest.raises(RateLimited):
        limiter.hit("s", "k", Limit(10, 60))
    clock.now += 30  # half of them have slid out
    for _ in range(5):
        limiter.hit("s", "k", Limit(10, 60))
    with pytest.raises(RateLimited):
        limiter.hit("s", "k", Limit(10, 60))
    clock.now += 120  # long idle: a clean slate
    for _ in range(10):
        limiter.hit("s", "k", Limit(10, 60))


def test_disabled_never_refuses() -> None:
    limiter = RateLimiter(enabled=False, clock=Clock())
    for _ in range(1000):
        limiter.hit("s", "k", Limit(1, 60))


def test_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.MAX_KEYS = 100
    for i in range(1000):
        limiter.hit("s", str(i), Limit(5, 60))
    assert len(limiter._windows) <= 100


def test_limits_are_configurable_and_misspellings_refused() -> None:
    from auth_service.ratelimit import PER_IP, configured

    limits = configured({"ip:login": (3, 10), "account:forgot": (1, 60)})
    assert limits["ip"]["login"] == Limit(3, 10)
    assert limits["account"]["forgot"] == Limit(1, 60)
    assert limits["ip"]["verify"] == PER_IP["verify"]
    with pytest.raises(ValueError):
        configured({"ip:logn": (3, 10)})
