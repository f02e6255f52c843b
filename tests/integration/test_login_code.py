"""Password-less sign-in by emailed code, on the real stack: the code comes through the
outbox, Kafka, the mailer and a real SMTP server; the same protections as other codes."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.accounts import PASSWORD, bearer, code_for, cooled_down_account
from tests.conftest import TEST_CODE_BUDGET, TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import wrong
from tests.support import unique_email

SUBJECT = "Your Films sign-in code"


def ask(http: httpx.Client, email: str, locale: str = "en") -> httpx.Response:
    return http.post("/v1/auth/login/code", json={"email": email, "locale": locale})


def redeem(http: httpx.Client, email: str, code: str) -> httpx.Response:
    return http.post("/v1/auth/login/code/verify", json={"email": email, "code": code})


def test_sign_in_with_an_emailed_code(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-login")
    assert ask(http, account.email).status_code == 202
    mail = stack.smtp.wait_for(account.email, count=2)[-1]
    assert mail.message["Subject"] == SUBJECT
    assert mail.code is not None
    pair = redeem(http, account.email, mail.code)
    assert pair.status_code == 200, pair.text
    assert set(pair.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}
    me = http.get("/v1/auth/me", headers=bearer(pair.json()["access_token"]))
    assert me.json()["email"] == account.email
    # Single use.
    again = redeem(http, account.email, mail.code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_code"


def test_the_russian_email(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-ru")
    ask(http, account.email, "ru")
    assert stack.smtp.wait_for(account.email, count=2)[-1].message["Subject"] == (
        "Код для входа в Films"
    )


def test_same_answer_and_no_email_for_unknown_and_unverified(
    stack: Stack, http: httpx.Client
) -> None:
    verified = cooled_down_account(stack, http, "code-verified")
    unknown = unique_email("code-unknown")
    unverified = unique_email("code-unverified")
    http.post("/v1/auth/signup", json={"email": unverified, "password": PASSWORD})
    signup_code = code_for(stack, unverified)
    answers = [ask(http, email) for email in (verified.email, unknown, unverified)]
    assert {(a.status_code, a.text) for a in answers} == {(202, answers[0].text)}
    # One person's emails stay in order, so the next one to arrive is the next one sent.
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    http.post("/v1/auth/verify/resend", json={"email": unverified})
    assert stack.smtp.wait_for(unverified, count=2)[-1].message["Subject"] == (
        "Your Films verification code"
    )
    assert stack.smtp.to(unknown) == []
    # And a code login can never verify an account someone else may have pre-registered.
    assert redeem(http, unverified, signup_code).json()["error"] == "invalid_code"
    login = http.post("/v1/auth/login", json={"email": unverified, "password": PASSWORD})
    assert login.json()["error"] == "email_not_verified"


def test_codes_are_bound_to_their_purpose(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-purpose")
    ask(http, account.email)
    code = code_for(stack, account.email, count=2)
    reset = http.post(
        "/v1/auth/password/reset",
        json={"email": account.email, "code": code, "new_password": "another passphrase"},
    )
    assert reset.json()["error"] == "invalid_code"


def test_a_code_burns_after_five_wrong_tries(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-burn")
    ask(http, account.email)
    code = code_for(stack, account.email, count=2)
    for _ in range(5):
        assert redeem(http, account.email, wrong(code)).json()["error"] == "invalid_code"
    assert redeem(http, account.email, code).status_code == 400


def test_an_expired_code_is_refused(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-expired")
    ask(http, account.email)
    code = code_for(stack, account.email, count=2)
    with sqlite3.connect(stack.work / "auth.db") as db:  # ten minutes pass
        db.execute(
            "UPDATE one_time_codes SET expires_at = '2000-01-01 00:00:00' WHERE purpose = ? "
            "AND user_id = (SELECT id FROM users WHERE email = ?)",
            ("login_code", account.email),
        )
    assert redeem(http, account.email, code).json()["error"] == "invalid_code"


def test_the_per_address_budget_spans_codes(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "code-budget")
    ask(http, account.email)
    code = code_for(stack, account.email, count=2)
    for _ in range(TEST_CODE_BUDGET):
        redeem(http, account.email, wrong(code))
    refused = redeem(http, account.email, code)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_code_attempts"


def test_one_code_per_cooldown(stack: Stack, http: httpx.Client) -> None:
    for _ in range(3):  # again if a busy machine took the cooldown between the two asks
        account = cooled_down_account(stack, http, "code-cooldown")
        asked = time.monotonic()
        assert ask(http, account.email).status_code == 202
        in_time = time.monotonic() - asked < TEST_RESEND_COOLDOWN - 0.5
        assert ask(http, account.email).status_code == 202  # too soon: the same answer, no email
        if in_time:
            break
    else:
        pytest.fail("the machine never asked twice within the cooldown")
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    http.post("/v1/auth/password/forgot", json={"email": account.email})
    mails = stack.smtp.wait_for(account.email, count=3)
    assert [m.message["Subject"] for m in mails[1:]] == [
        SUBJECT,
        "Your Films password reset code",
    ]
