"""Refresh rotation and reuse detection, logout, and password reset by emailed code."""

from __future__ import annotations

import sqlite3
import time

import httpx
import jwt

from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify, wrong
from tests.support import unique_email


def new_account(stack: Stack, http: httpx.Client) -> tuple[str, dict[str, str]]:
    email = unique_email()
    r = verify(stack, http, email, signup(stack, http, email))
    assert r.status_code == 200
    return email, r.json()


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/v1/auth/token/refresh", json={"refresh_token": token})


def test_refresh_rotates(stack: Stack, http: httpx.Client) -> None:
    _, first = new_account(stack, http)
    r = refresh(http, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    me = http.get("/v1/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert me.status_code == 200
    assert refresh(http, second["refresh_token"]).status_code == 200


def test_reusing_a_rotated_token_revokes_the_family(stack: Stack, http: httpx.Client) -> None:
    _, first = new_account(stack, http)
    second = refresh(http, first["refresh_token"]).json()
    # A thief replays the old token: refused, and the legitimate chain dies with it.
    reuse = refresh(http, first["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json()["error"] == "invalid_grant"
    assert refresh(http, second["refresh_token"]).status_code == 401


def test_other_logins_survive_a_reuse_in_one_family(stack: Stack, http: httpx.Client) -> None:
    email, first = new_account(stack, http)
    other = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    refresh(http, first["refresh_token"])
    refresh(http, first["refresh_token"])  # reuse kills the first family only
    assert refresh(http, other["refresh_token"]).status_code == 200


def test_logout_revokes(stack: Stack, http: httpx.Client) -> None:
    _, pair = new_account(stack, http)
    r = http.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 204
    assert refresh(http, pair["refresh_token"]).status_code == 401
    # Idempotent, and unknown tokens get the same answer.
    assert (
        http.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]}).status_code
        == 204
    )
    assert http.post("/v1/auth/logout", json={"refresh_token": "nope"}).status_code == 204


def test_unknown_refresh_token_is_401(http: httpx.Client) -> None:
    r = refresh(http, "x" * 43)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_grant"


def forgot(http: httpx.Client, email: str) -> httpx.Response:
    return http.post("/v1/auth/password/forgot", json={"email": email})


def test_password_reset_by_emailed_code(stack: Stack, http: httpx.Client) -> None:
    email, before = new_account(stack, http)
    time.sleep(TEST_RESEND_COOLDOWN)
    assert forgot(http, email).status_code == 202
    mail = stack.smtp.wait_for(email, count=2)[-1]
    assert mail.message["Subject"] == "Your Films password reset code"
    code = mail.code
    assert code is not None

    new_password = "a brand new passphrase"
    r = http.post(
        "/v1/auth/password/reset",
        json={"email": email, "code": code, "new_password": new_password},
    )
    assert r.status_code == 204, r.text
    login = "/v1/auth/login"
    assert http.post(login, json={"email": email, "password": PASSWORD}).status_code == 401
    assert http.post(login, json={"email": email, "password": new_password}).status_code == 200
    # Every session from before the reset is over.
    assert refresh(http, before["refresh_token"]).status_code == 401
    # The code was single use.
    again = http.post(
        "/v1/auth/password/reset",
        json={"email": email, "code": code, "new_password": "yet another passphrase"},
    )
    assert again.status_code == 400


def test_reset_code_burns_after_five_wrong_tries(stack: Stack, http: httpx.Client) -> None:
    email, _ = new_account(stack, http)
    time.sleep(TEST_RESEND_COOLDOWN)
    forgot(http, email)
    code = stack.smtp.wait_for(email, count=2)[-1].code
    assert code is not None
    body = {"email": email, "new_password": "a brand new passphrase"}
    for _ in range(5):
        assert (
            http.post("/v1/auth/password/reset", json={**body, "code": wrong(code)}).status_code
            == 400
        )
    assert http.post("/v1/auth/password/reset", json={**body, "code": code}).status_code == 400


def test_a_verification_code_cannot_reset_a_password(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    code = signup(stack, http, email)
    r = http.post(
        "/v1/auth/password/reset",
        json={"email": email, "code": code, "new_password": "a brand new passphrase"},
    )
    assert r.status_code == 400


def test_forgot_answers_the_same_for_unknown_addresses(stack: Stack, http: httpx.Client) -> None:
    email, _ = new_account(stack, http)
    time.sleep(TEST_RESEND_COOLDOWN)
    known, unknown = forgot(http, email), forgot(http, unique_email("nobody"))
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)


def test_a_refresh_refused_for_the_account_leaves_the_token_alive(
    stack: Stack, http: httpx.Client
) -> None:
    """An account that may not refresh (here: disabled by hand, its sessions left open)
    gets `invalid_grant`, and the refused rotation is undone, not half-done: once the
    account is back, the same token still works, and the pair it gets is that account's."""
    email, pair = new_account(stack, http)
    new_account(stack, http)  # another account in the table: the roles read is its own

    def disabled(value: str | None) -> None:
        with sqlite3.connect(stack.work / "auth.db") as db:
            db.execute("UPDATE users SET disabled_at = ? WHERE email = ?", (value, email))

    disabled("2026-01-01 00:00:00.000000")
    refused = refresh(http, pair["refresh_token"])
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_grant"
    disabled(None)
    again = refresh(http, pair["refresh_token"])
    assert again.status_code == 200, again.text  # not revoked, not taken for a reuse
    claims = jwt.decode(again.json()["access_token"], options={"verify_signature": False})
    before = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["sid"], claims["roles"]) == (before["sub"], before["sid"], [])
