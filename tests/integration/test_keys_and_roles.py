"""`keys rotate` and `roles grant|revoke`, run as an operator would, against running auth."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import Stack
from tests.integration.test_auth_api import PASSWORD, signup, verify
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
