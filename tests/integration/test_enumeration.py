"""Same status, body and (median) timing for known and unknown addresses."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify
from tests.support import unique_email

SAMPLES = 11


def medians_ms(
    calls: dict[str, Callable[[], httpx.Response]],
) -> dict[str, tuple[float, set[tuple[int, str]]]]:
    """Each call's median time and its answers. The calls take turns, so that a busy
    spell of a shared machine falls on all of them alike, not on whichever ran then
    (in a new order each round)."""
    times: dict[str, list[float]] = {kind: [] for kind in calls}
    answers: dict[str, set[tuple[int, str]]] = {kind: set() for kind in calls}
    order = list(calls)
    for _ in range(SAMPLES):
        random.shuffle(order)  # no kind always first after the same other
        for kind in order:
            call = calls[kind]
            started = time.perf_counter()
            r = call()
            times[kind].append((time.perf_counter() - started) * 1000)
            answers[kind].add((r.status_code, r.text))
    return {kind: (statistics.median(times[kind]), answers[kind]) for kind in calls}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/auth/signup",
        "/v1/auth/verify/resend",
        "/v1/auth/password/forgot",
        "/v1/auth/login/code",
    ],
)
def test_known_and_unknown_addresses_look_alike(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.auth.url, timeout=30) as http:
        verified = unique_email("verified")
        verify(stack, http, verified, signup(stack, http, verified))
        unverified = unique_email("unverified")
        signup(stack, http, unverified)

        def call(address: Callable[[], str]) -> Callable[[], httpx.Response]:
            def post() -> httpx.Response:
                body = {"email": address()}
                if path.endswith("signup"):
                    body["password"] = PASSWORD
                return http.post(path, json=body)

            return post

        call(lambda: unique_email("warm-up"))()
        results = medians_ms(
            {
                # A new address each time: a sign-up makes the one before a pending account.
                "unknown": call(lambda: unique_email("unknown")),
                "verified": call(lambda: verified),
                "unverified": call(lambda: unverified),
            }
        )
    bodies = set().union(*(answers for _, answers in results.values()))
    assert len(bodies) == 1, bodies  # one status and body for all
    medians = [median for median, _ in results.values()]
    assert max(medians) <= 1.2 * min(medians), results


FLOOR_SECONDS = 0.120  # AUTH_ENUMERATION_FLOOR_MS's default, which the stack keeps


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/v1/auth/verify", {}),
        ("/v1/auth/password/reset", {"new_password": "another password 2"}),
        ("/v1/auth/login/code/verify", {}),
    ],
)
def test_a_wrong_code_answers_no_sooner_than_the_floor(
    stack: Stack, path: str, extra: dict[str, str]
) -> None:
    """Redeeming a code looks an address up before it can fail: without the floor, a wrong
    code for an address with an account answered measurably later than one for an address
    without. (A lower bound: the answer may come later on a busy machine, never sooner.)"""
    with httpx.Client(base_url=stack.auth.url, timeout=30) as http:
        verified = unique_email("verified")
        verify(stack, http, verified, signup(stack, http, verified))
        unverified = unique_email("unverified")
        signup(stack, http, unverified)
        answers = set()
        for email in (unique_email("unknown"), verified, unverified):
            started = time.perf_counter()
            r = http.post(path, json={"email": email, "code": "000000", **extra})
            assert time.perf_counter() - started >= FLOOR_SECONDS, (email, r.text)
            answers.add((r.status_code, r.json()["error"]))
    assert len(answers) == 1 and answers.pop()[0] == 400, answers
