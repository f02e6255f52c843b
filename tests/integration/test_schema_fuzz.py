"""Schemathesis generates requests from each service's own OpenAPI schema, valid and
invalid; whatever it sends, the answer is never a 5xx.

The strategies are driven with Hypothesis directly: schemathesis's pytest plugin does not
work with pytest 9 yet (it reads a private attribute pytest removed).
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.conftest import Stack

FUZZ = settings(
    max_examples=25,
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
        operation = result.ok()
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ
            def never_5xx(case: schemathesis.Case) -> None:
                response = case.call(base_url=base_url, headers=headers)
                statuses[response.status_code] += 1
                assert response.status_code < 500, (case.method, case.path, response.text[:300])

            try:
                never_5xx()
            except Unsatisfiable:
                # No inputs to violate (e.g. GET /healthz): only valid requests exist.
                assert mode is schemathesis.GenerationMode.NEGATIVE
    return statuses


@pytest.mark.parametrize("service", ["auth", "films"])
def test_no_generated_request_gets_a_5xx(stack: Stack, films_token: str, service: str) -> None:
    url = stack.auth.url if service == "auth" else stack.films.url
    statuses = fuzz(url, films_token)
    # The schema really was walked, and both accepted and refused requests were made.
    assert sum(statuses.values()) >= 100, statuses
    assert any(200 <= s < 300 for s in statuses), statuses
    assert statuses[422] > 0, statuses
