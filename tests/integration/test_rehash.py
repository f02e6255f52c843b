"""A hash made with older argon2 parameters is upgraded at the next successful login."""

from __future__ import annotations

import json

import httpx

from tests.accounts import auth_rows
from tests.conftest import Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify
from tests.support import unique_email


def stored_hash(stack: Stack, email: str) -> str:
    [(stored,)] = auth_rows(stack, "SELECT password_hash FROM users WHERE email = ?", email)
    return str(stored)


def test_login_upgrades_an_outdated_hash(stack: Stack) -> None:
    email = unique_email("rehash")
    with httpx.Client(base_url=stack.auth.url, timeout=30) as http:
        verify(stack, http, email, signup(stack, http, email))
    assert "$m=19456,t=2,p=1$" in stored_hash(stack, email)

    # The operator raises the cost: a second auth on the same database with stronger settings.
    stronger = stack.spawn(
        "auth_service",
        "auth-stronger",
        AUTH_DATABASE_URL=stack.auth.env["AUTH_DATABASE_URL"],  # the same accounts
        AUTH_ARGON2_MEMORY_KIB="32768",
        AUTH_ARGON2_TIME_COST="3",
    )
    try:
        with httpx.Client(base_url=stronger.url, timeout=30) as http:
            r = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200
            assert "$m=32768,t=3,p=1$" in stored_hash(stack, email)
            again = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert again.status_code == 200  # the upgraded hash verifies
        details = auth_rows(
            stack,
            "SELECT detail FROM audit_events WHERE email = ? AND event = 'login_ok' ORDER BY id",
            email,
        )
        assert [json.loads(d) for (d,) in details] == [{"rehashed": True}, {"rehashed": False}]
    finally:
        stronger.stop()
