"""Per-key sliding-window rate limits, in process memory.

One auth instance counts on its own; several instances behind a balancer each allow the
limit (a shared Redis counter is the upgrade path, see the README).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from auth_service.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    requests: int
    seconds: float


@dataclass
class _Window:
    started: float
    current: int = 0
    previous: int = 0


class RateLimiter:
    MAX_KEYS = 100_000

    def __init__(self, enabled: bool = True, clock: object = time.monotonic) -> None:
        self.enabled = enabled
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def hit(self, scope: str, key: str, limit: Limit) -> None:
        """Count one request; raise RateLimited (429 + Retry-After) past the limit."""
        if not self.enabled:
            return
        now: float = self._clock()  # type: ignore[operator]
        window = self._windows.get((scope, key))
        if window is None:
            if len(self._windows) >= self.MAX_KEYS:
                self._evict(now, limit.seconds)
            window = self._windows[(scope, key)] = _Window(started=now)
        elapsed = now - window.started
        if elapsed >= limit.seconds:
            periods = int(elapsed // limit.seconds)
            window.previous = window.current if periods == 1 else 0
            window.current = 0
            window.started += periods * limit.seconds
            elapsed = now - window.started
        # Sliding estimate: the previous window's count, weighted by how much of it overlaps.
        weight = 1 - elapsed / limit.seconds
        if window.previous * weight + window.current >= limit.requests:
            retry_after = math.ceil(limit.seconds - elapsed)
            raise RateLimited(retry_after)
        window.current += 1

    def _evict(self, now: float, horizon: float) -> None:
        stale = [k for k, w in self._windows.items() if now - w.started >= 2 * horizon]
        for key in stale or list(self._windows)[: self.MAX_KEYS // 10]:
            del self._windows[key]


# Per client IP: generous for people behind one NAT, tight for a script.
PER_IP = {
    "signup": Limit(20, 60),
    "verify": Limit(30, 60),
    "resend": Limit(10, 60),
    "login": Limit(30, 60),
    "forgot": Limit(10, 60),
    "reset": Limit(30, 60),
    "refresh": Limit(120, 60),
}
# Per account (the email): a six-digit code or a password is guessed one account at a time.
PER_ACCOUNT = {
    "verify": Limit(10, 600),
    "reset": Limit(10, 600),
    "resend": Limit(5, 3600),
    "forgot": Limit(5, 3600),
    "login": Limit(10, 60),
}


def configured(overrides: dict[str, tuple[int, float]]) -> dict[str, dict[str, Limit]]:
    """The limits in force: the defaults above, with AUTH_RATE_LIMITS overrides applied,
    keyed "ip:<action>" or "account:<action>" -> [requests, seconds]."""
    limits = {
        "ip": {k: v for k, v in PER_IP.items()},
        "account": {k: v for k, v in PER_ACCOUNT.items()},
    }
    for key, (requests, seconds) in overrides.items():
        scope, _, action = key.partition(":")
        if scope not in limits or action not in PER_IP:
            raise ValueError(f"AUTH_RATE_LIMITS: unknown limit {key!r}")
        limits[scope][action] = Limit(int(requests), float(seconds))
    return limits
