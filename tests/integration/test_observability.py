"""Observability: the request id that follows a sign-up from auth's HTTP request into the
mailer's logs, delivery history on the mailer (`GET /v1/deliveries`, admin only), and the
business metrics on /metrics."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support import Minter, unique_email, wait_until


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def admin(stack: Stack) -> str:
    return Minter(stack.key_dir).token(roles=["admin"])


def test_a_signup_is_traced_and_its_delivery_recorded(stack: Stack, admin: str) -> None:
    email, rid = unique_email("traced"), f"trace-{uuid.uuid4().hex}"
    with stack.http() as http:
        r = http.post(
            f"{stack.auth.url}/v1/auth/signup",
            json={"email": email, "password": "correct horse battery"},
            headers={"X-Request-ID": rid},
        )
        assert r.status_code == 202 and r.headers["x-request-id"] == rid
        [mail] = stack.smtp.wait_for(email)

        def history() -> list[dict[str, Any]]:
            r = http.get(
                f"{stack.mailer.url}/v1/deliveries",
                params={"email": email.upper()},  # addresses compare case-insensitively
                headers=bearer(admin),
            )
            assert r.status_code == 200, r.text
            return r.json()["items"]

        [item] = wait_until(history, 10)
    assert item["type"] == "email_verification"
    assert (item["status"], item["attempts"], item["error"]) == ("sent", 1, None)
    assert [(h["attempt"], h["outcome"]) for h in item["history"]] == [(1, "sent")]

    # One id from the HTTP request, through the Kafka header, to the mailer's log line.
    sent = wait_until(
        lambda: [
            line
            for line in log_lines(stack.mailer.logs())
            if line.get("request_id") == rid and line["message"].startswith("sent ")
        ],
        10,
    )
    assert item["event_id"] in sent[0]["message"]
    assert any(line.get("request_id") == rid for line in log_lines(stack.auth.logs()))
    assert mail.code is not None
    assert mail.code not in stack.mailer.logs() + stack.auth.logs()  # never the plaintext code

    metrics = httpx.get(f"{stack.mailer.url}/metrics").text
    assert 'mailer_emails_total{outcome="sent"}' in metrics
    assert 'mailer_consumer_lag{partition="0",topic="auth.email-codes"}' in metrics


def test_a_malformed_request_id_is_replaced(stack: Stack) -> None:
    r = httpx.get(f"{stack.auth.url}/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["x-request-id"] != "bad id\twith junk"
    assert len(r.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("roles", "status", "error"),
    [(None, 401, "invalid_token"), ([], 403, "forbidden"), (["reader"], 403, "forbidden")],
)
def test_delivery_history_is_for_admins_only(
    stack: Stack, roles: list[str] | None, status: int, error: str
) -> None:
    headers = {} if roles is None else bearer(Minter(stack.key_dir).token(roles=roles))
    r = httpx.get(
        f"{stack.mailer.url}/v1/deliveries", params={"email": "a@example.com"}, headers=headers
    )
    assert r.status_code == status and r.json()["error"] == error
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "params", [{}, {"email": "not an address"}, {"email": "a@example.com", "limit": "0"}]
)
def test_delivery_history_rejects_bad_queries(
    stack: Stack, admin: str, params: dict[str, str]
) -> None:
    r = httpx.get(f"{stack.mailer.url}/v1/deliveries", params=params, headers=bearer(admin))
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_auth_metrics_count_signups_logins_and_codes(stack: Stack) -> None:
    def counter(text: str, name: str, label: str) -> float:
        found = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    metrics = f"{stack.auth.url}/metrics"
    before = httpx.get(metrics).text
    email = unique_email("metrics")
    with stack.http() as http:
        body = {"email": email, "password": "correct horse battery"}
        assert http.post(f"{stack.auth.url}/v1/auth/signup", json=body).status_code == 202
        body["password"] = "wrong horse battery"
        assert http.post(f"{stack.auth.url}/v1/auth/login", json=body).status_code == 401
    after = httpx.get(metrics).text
    for name, label in (
        ("auth_events_total", 'event="signup"'),
        ("auth_events_total", 'event="login_failed"'),
        ("auth_codes_issued_total", 'type="email_verification"'),
    ):
        assert counter(after, name, label) == counter(before, name, label) + 1, name
    assert "http_request_duration_seconds_bucket{" in after


@pytest.mark.parametrize("service", ["auth", "films", "mailer"])
def test_openapi_docs_are_served(stack: Stack, service: str) -> None:
    url = getattr(stack, service).url
    assert httpx.get(f"{url}/docs").status_code == 200
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    expected = {
        "auth": "/v1/auth/signup",
        "films": "/v1/films/{film_id}",
        "mailer": "/v1/deliveries",
    }
    assert expected[service] in paths
