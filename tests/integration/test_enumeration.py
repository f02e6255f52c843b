"""Same status, body and (median) timing for known and unknown addresses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify
from tests.support import unique_email

SAMPLES = 11


def median_ms(call: Callable[[], httpx.Response]) -> tuple[float, set[tuple[int, str]]]:
    times, answers = [], set()
    for _ in range(SAMPLES):
        started = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - started) * 1000)
        answers.add((r.status_code, r.text))
    return statistics.median(times), answers


@pytest.mark.parametrize(
    "path", ["/v1/auth/signup", "/v1/auth/verify/resend", "/v1/auth/password/forgot"]
)
def test_known_and_unknown_addresses_look_alike(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.auth.url, timeout=30) as http:
        verified = unique_email("verified")
        verify(stack, http, verified, signup(stack, http, verified))
        unverified = unique_email("unverified")
        signup(stack, http, unverified)

        def call(email: str) -> Callable[[], httpx.Response]:
            body = (
                {"email": email, "password": PASSWORD}
                if path.endswith("signup")
                else {"email": email}
            )
            return lambda: http.post(path, json=body)

        call(unique_email("warm-up"))()
        results = {
            "unknown": median_ms(call(unique_email("unknown"))),
            "verified": median_ms(call(verified)),
            "unverified": median_ms(call(unverified)),
        }
    bodies = set().union(*(answers for _, answers in results.values()))
    assert len(bodies) == 1, bodies  # one status and body for all
    medians = [median for median, _ in results.values()]
    assert max(medians) <= 1.2 * min(medians), results
