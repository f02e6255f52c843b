"""Schemathesis generates requests from each service's own OpenAPI schema, valid and
invalid; whatever it sends, the answer is never a 5xx.

The strategies are driven with Hypothesis directly: schemathesis's pytest plugin does not
work with pytest 9 yet (it reads a private attribute pytest removed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Err

from tests.accounts import new_admin
from tests.conftest import Stack
from tests.support import Minter

FUZZ = settings(
    max_examples=8,  # per operation and mode: ~700 requests to auth
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure reproduces
    database=None,
)


def fuzz(base_url: str, token: str) -> Counter[int]:
    """Every operation, with schema-valid and schema-violating requests; the status counts."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ
            def never_5xx(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=base_url, headers=headers)
                statuses[response.status_code] += 1
                assert response.status_code < 500, (case.method, case.path, response.text[:300])

            try:
                never_5xx()
            except Unsatisfiable:
                # No inputs to violate (e.g. GET /healthz): only valid requests exist.
                assert mode is schemathesis.GenerationMode.NEGATIVE
    return statuses


@pytest.fixture(scope="module")
def scratch_films(stack: Stack) -> Iterator[str]:
    """Films on a database of its own: the fuzzer's admin DELETEs must not eat the catalogue."""
    service = stack.spawn("films_service", "films-fuzz")
    try:
        yield service.url
    finally:
        service.stop()


def test_auth_never_answers_5xx(stack: Stack) -> None:
    # A real admin's token (with a live session), so the Bearer and admin endpoints'
    # validation is reached, not just their 401 and 403.
    with httpx.Client(timeout=30) as http:
        admin = new_admin(stack, http)
    check(fuzz(stack.auth.url, admin.access_token))


def test_films_never_answers_5xx(stack: Stack, scratch_films: str) -> None:
    # An admin token, so the write endpoints' validation is reached, not just the 403.
    check(fuzz(scratch_films, Minter(stack.key_dir).token(roles=["admin"])))


def check(statuses: Counter[int]) -> None:
    # The schema really was walked, and both accepted and refused requests were made.
    assert sum(statuses.values()) >= 100, statuses
    assert any(200 <= s < 300 for s in statuses), statuses
    assert statuses[422] > 0, statuses
