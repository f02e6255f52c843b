"""Progressive lockout, the per-address code budget, and the audit trail."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from tests.accounts import auth_rows
from tests.conftest import TEST_CODE_BUDGET, TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify, wrong
from tests.support import unique_email

LOCKOUT_THRESHOLD = 30  # the default


def login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    return http.post("/v1/auth/login", json={"email": email, "password": password})


@pytest.mark.parametrize("exists", [True, False], ids=["known", "unknown"])
def test_progressive_lockout_looks_the_same_for_any_address(
    stack: Stack, http: httpx.Client, exists: bool
) -> None:
    email = unique_email("locked")
    if exists:
        verify(stack, http, email, signup(stack, http, email))
    codes = [login(http, email, "wrong passphrase").status_code for _ in range(LOCKOUT_THRESHOLD)]
    assert codes == [401] * LOCKOUT_THRESHOLD  # the 30th failure sets the lock
    locked = login(http, email, PASSWORD)  # even the right password waits
    assert locked.status_code == 429
    assert locked.json()["error"] == "account_locked"
    assert 1 <= int(locked.headers["Retry-After"]) <= 60


def test_a_successful_login_clears_the_failures(stack: Stack, http: httpx.Client) -> None:
    """Failures count toward a lockout only until the right password is given."""
    email = unique_email("cleared")
    verify(stack, http, email, signup(stack, http, email))
    for _ in range(2):
        wrong_tries = [
            login(http, email, "wrong").status_code for _ in range(LOCKOUT_THRESHOLD - 1)
        ]
        assert wrong_tries == [401] * (LOCKOUT_THRESHOLD - 1)
        assert login(http, email, PASSWORD).status_code == 200  # and the count starts over
    throttle = auth_rows(
        stack,
        "SELECT login_failures, locked_until, last_login_failure_at FROM address_throttle "
        "WHERE email = ?",
        email,
    )
    assert throttle == [(0, None, None)]


def test_a_fresh_code_does_not_reset_the_guessing_budget(stack: Stack, http: httpx.Client) -> None:
    email = unique_email("budget")
    code = signup(stack, http, email)
    for _ in range(5):  # burns the first code
        assert verify(stack, http, email, wrong(code)).status_code == 400
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    http.post("/v1/auth/verify/resend", json={"email": email})
    fresh = stack.smtp.wait_for(email, count=2)[-1].code
    assert fresh is not None
    for _ in range(TEST_CODE_BUDGET - 5):
        assert verify(stack, http, email, wrong(fresh)).status_code == 400
    refused = verify(stack, http, email, fresh)  # right code, but the budget is spent
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_code_attempts"
    assert int(refused.headers["Retry-After"]) > 0


def test_the_audit_trail_records_events_and_no_secrets(stack: Stack, http: httpx.Client) -> None:
    email = unique_email("audited")
    code = signup(stack, http, email)
    verify(stack, http, email, wrong(code))
    pair = verify(stack, http, email, code).json()
    login(http, email, "not the passphrase")
    login(http, email, PASSWORD)
    http.post("/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})
    http.post("/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse

    with sqlite3.connect(stack.work / "auth.db") as db:
        user_id = db.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()[0]
        rows = db.execute(
            "SELECT event, email, ip, detail FROM audit_events WHERE email = ? OR user_id = ? "
            "ORDER BY id",
            (email, user_id),
        ).fetchall()
    events = [r[0] for r in rows]
    assert events == [
        "signup",
        "verify_failed",
        "verify_ok",
        "login_failed",
        "login_ok",
        "refresh_reuse",
    ]
    assert all(r[2] == "127.0.0.1" for r in rows)
    dumped = json.dumps(rows)
    for secret in (code, wrong(code), PASSWORD, "not the passphrase", pair["refresh_token"]):
        assert secret not in dumped
