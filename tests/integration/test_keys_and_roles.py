"""`keys rotate` and `roles grant|revoke`, run as an operator would, against running auth."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from auth_service.totp import SecretBox
from tests.accounts import new_account
from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify
from tests.integration.test_two_step import mfa_token, second_step, turn_on
from tests.support import ROOT, ServiceProcess, unique_email, wait_until


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_service", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def rotating_auth(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """An auth of its own: rotating the shared test keys would pull films' key away."""
    keys = stack.own_keys(tmp_path_factory.mktemp("rotating-keys"))
    service = stack.spawn("auth_service", "auth-rotating", **keys)
    try:
        yield service
    finally:
        service.stop()


def me(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_rotation_publishes_both_keys_and_old_tokens_keep_working(
    stack: Stack, rotating_auth: ServiceProcess
) -> None:
    with httpx.Client(base_url=rotating_auth.url, timeout=30) as http:
        email = unique_email("rotation")
        r = http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        assert r.status_code == 202
        code = stack.smtp.wait_for(email)[-1].code
        before = http.post("/v1/auth/verify", json={"email": email, "code": code}).json()
        old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
        assert [k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]] == [old_kid]

        done = run_cli(rotating_auth.env, "keys", "rotate")
        assert done.returncode == 0, done.stderr

        # The running service picks the new key up without a restart.
        kids = wait_until(
            lambda: (
                ks
                if len(ks := [k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]])
                == 2
                else None
            ),
            timeout=15,
            interval=0.5,
        )
        new_kid = kids[0]
        assert kids[1] == old_kid and new_kid != old_kid

        assert me(http, before["access_token"]).status_code == 200  # signed by the old key
        after = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid
        assert me(http, after["access_token"]).status_code == 200
        refreshed = http.post(
            "/v1/auth/token/refresh", json={"refresh_token": before["refresh_token"]}
        ).json()
        assert jwt.get_unverified_header(refreshed["access_token"])["kid"] == new_kid


def test_roles_travel_in_the_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.auth.url, timeout=30) as http:
        email = unique_email("admin")
        pair = verify(stack, http, email, signup(stack, http, email)).json()
        assert jwt.decode(pair["access_token"], options={"verify_signature": False})["roles"] == []

        granted = run_cli(stack.auth.env, "roles", "grant", email.upper(), "admin")
        assert granted.returncode == 0, granted.stderr
        pair = http.post(
            "/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
        ).json()
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        assert claims["roles"] == ["admin"]
        assert me(http, pair["access_token"]).json()["roles"] == ["admin"]

        assert run_cli(stack.auth.env, "roles", "revoke", email, "admin").returncode == 0
        login = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        assert jwt.decode(login["access_token"], options={"verify_signature": False})["roles"] == []


def test_roles_command_refuses_unknown_accounts_and_bad_names(stack: Stack) -> None:
    assert run_cli(stack.auth.env, "roles", "grant", unique_email("ghost"), "admin").returncode != 0
    assert run_cli(stack.auth.env, "roles", "grant", unique_email(), "Bad Role!").returncode != 0


def test_private_keys_are_owner_only(rotating_auth: ServiceProcess) -> None:
    private = Path(rotating_auth.env["AUTH_PRIVATE_KEY_PATH"])
    assert private.stat().st_mode & 0o077 == 0


def test_a_rotated_code_secret_strands_nothing(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`keys rotate-code-secret`, then a restart: an authenticator app, a recovery code and
    an emailed code made under the old secret all still work, and the app is sealed again
    under the new one as it is used (so the old secret can go once every app has been)."""
    directory = tmp_path_factory.mktemp("code-secret")
    keys = stack.own_keys(directory)
    retired = Path(keys["AUTH_RETIRED_CODE_SECRETS_PATH"])
    database = directory / "auth.db"
    auth = stack.spawn(
        "auth_service",
        "auth-code-secret",
        AUTH_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        **keys,
    )
    try:
        with httpx.Client(base_url=auth.url, timeout=30) as http:
            account = new_account(stack, http, "code-secret", auth=auth.url)
            email = account.email
            app, recovery_codes = turn_on(http, account)
            time.sleep(TEST_RESEND_COOLDOWN + 0.2)
            assert http.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
            emailed = wait_until(
                lambda: [m.code for m in stack.smtp.wait_for(email) if m.code][1:], timeout=30
            )[0]

            old = Path(keys["AUTH_CODE_SECRET_PATH"]).read_bytes()
            done = run_cli(auth.env, "keys", "rotate-code-secret")
            assert done.returncode == 0, done.stderr
            new = Path(keys["AUTH_CODE_SECRET_PATH"]).read_bytes()
            assert new != old and retired.read_bytes().split() == [old]
            assert retired.stat().st_mode & 0o077 == 0
            with sqlite3.connect(database) as db:
                events = [
                    e
                    for (e,) in db.execute("SELECT event FROM audit_events ORDER BY id").fetchall()
                ]
            assert events[-1] == "code_secret_rotation"
            auth.stop()
            auth.start()

            signed_in = second_step(http, mfa_token(http, account), app.code())
            assert signed_in.status_code == 200, signed_in.text
            with sqlite3.connect(database) as db:
                (sealed,), *_ = db.execute("SELECT secret FROM totp_factors").fetchall()
            assert SecretBox(new).open(sealed, uuid.UUID(account.id))[1]  # sealed anew
            recovered = second_step(http, mfa_token(http, account), recovery_codes[0])
            assert recovered.status_code == 200, recovered.text
            reset = {"email": email, "code": emailed, "new_password": "a rotated passphrase"}
            assert http.post("/v1/auth/password/reset", json=reset).status_code == 204
    finally:
        auth.stop()


def test_rotating_a_code_secret_given_in_the_environment_is_refused(stack: Stack) -> None:
    done = run_cli({**stack.auth.env, "AUTH_CODE_SECRET": "x" * 40}, "keys", "rotate-code-secret")
    assert done.returncode != 0 and "AUTH_CODE_SECRET" in done.stderr
