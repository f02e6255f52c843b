"""How long an answer that must not tell one address from another is held back.

A fixed floor hides the difference between an answer's branches only while every branch
fits under it. On a slow or loaded machine a sign-up that creates an account outlasts one
for a known address, and the difference shows again. So a route's floor is the configured
one or the slowest of its recent answers, whichever is longer: a slow spell raises it for
every branch alike. It never rises above `CAP` times the configured floor, so load cannot
hold answers back without bound, and a floor of 0 stays 0 (padding off).
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Gauge

WINDOW = 256  # answers remembered per route, none older than AUTH_ENUMERATION_FLOOR_MEMORY_SECONDS
CAP = 10

FLOOR = Gauge(
    "auth_answer_floor_seconds",
    "What the route's answers are held back to: the configured floor or its recent slowest",
    ["route"],
    multiprocess_mode="livemax",
)


class AnswerFloor:
    """One route's floor. `hold(took)` records an answer's own time and says how much
    longer to hold it back."""

    def __init__(self, route: str, floor: float, memory: float) -> None:
        self._floor = floor
        self._memory = memory
        self._recent: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self._gauge = FLOOR.labels(route=route)

    def hold(self, took: float, now: float | None = None) -> float:
        return max(0.0, self._remember(took, now) - took)

    def record(self, took: float, now: float | None = None) -> None:
        """Count, among the route's answers, work an answer set going that ended after it
        (`took` from the request's start): later answers are held until such work would
        be done, so a request sent after one meets none of it."""
        self._remember(took, now)

    def _remember(self, took: float, now: float | None) -> float:
        """The floor, once `took` is remembered."""
        now = time.monotonic() if now is None else now
        while self._recent and now - self._recent[0][0] > self._memory:
            self._recent.popleft()
        self._recent.append((now, took))
        slowest = max(seconds for _, seconds in self._recent)
        target = min(max(self._floor, slowest), self._floor * CAP)
        self._gauge.set(target)
        return target


class AnswerFloors:
    """Every padded route's floor, made on its first answer."""

    def __init__(self, floor: float, memory: float) -> None:
        self._floor = floor
        self._memory = memory
        self._routes: dict[str, AnswerFloor] = {}

    def __getitem__(self, route: str) -> AnswerFloor:
        if (found := self._routes.get(route)) is None:
            found = self._routes[route] = AnswerFloor(route, self._floor, self._memory)
        return found
