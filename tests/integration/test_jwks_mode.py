"""Films in JWKS mode (FILMS_JWKS_URL): follows a key rotation in auth without a restart,
keeps verifying while auth is down, and cannot be made to hammer auth with unknown kids."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Stack
from tests.integration.test_auth_api import PASSWORD
from tests.integration.test_keys_and_roles import run_cli
from tests.support import Minter, ServiceProcess, unique_email, wait_until

COOLDOWN = 2


@pytest.fixture(scope="module")
def pair(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    keys = stack.own_keys(tmp_path_factory.mktemp("jwks-keys"))
    auth = stack.spawn("auth_service", "auth-jwks", **keys)
    films = stack.spawn(
        "films_service",
        "films-jwks",
        FILMS_JWKS_URL=f"{auth.url}/.well-known/jwks.json",
        FILMS_JWKS_COOLDOWN_SECONDS=str(COOLDOWN),
        FILMS_PUBLIC_KEY_PATH="/nonexistent.pem",  # proves the PEM is not what is used
        FILMS_REQUIRE_AT_JWT="true",  # the test stack's auth types its tokens so
    )
    try:
        yield auth, films
    finally:
        films.stop()
        auth.stop()


def fetches(films: ServiceProcess) -> float:
    text = httpx.get(f"{films.url}/metrics").text
    return sum(
        float(m) for m in re.findall(r'^jwks_fetches_total\{outcome="\w+"\} (\S+)$', text, re.M)
    )


def get_film(films: ServiceProcess, token: str) -> int:
    return httpx.get(
        f"{films.url}/v1/films/1", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_jwks_mode_follows_rotation_and_survives_auth_outage(
    stack: Stack, pair: tuple[ServiceProcess, ServiceProcess]
) -> None:
    auth, films = pair
    assert httpx.get(f"{films.url}/readyz").json()["checks"]["keys"] == "ok"
    email = unique_email("jwks")
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        code = stack.smtp.wait_for(email)[-1].code
        before = http.post("/v1/auth/verify", json={"email": email, "code": code}).json()
        assert get_film(films, before["access_token"]) == 200

        assert run_cli(auth.env, "keys", "rotate").returncode == 0
        wait_until(lambda: len(http.get("/.well-known/jwks.json").json()["keys"]) == 2, 15, 0.5)
        time.sleep(COOLDOWN)  # let films' cooldown from start-up pass
        after = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    new_kid = jwt.get_unverified_header(after["access_token"])["kid"]
    assert new_kid != jwt.get_unverified_header(before["access_token"])["kid"]

    # Films has never seen the new kid: it re-fetches once and accepts, without a restart.
    assert get_film(films, after["access_token"]) == 200
    assert get_film(films, before["access_token"]) == 200  # the retired key is still published

    auth.stop()  # auth goes down: films keeps verifying with what it cached
    assert get_film(films, after["access_token"]) == 200
    assert get_film(films, before["access_token"]) == 200


def test_unknown_kids_refetch_at_most_once_per_cooldown(
    stack: Stack, pair: tuple[ServiceProcess, ServiceProcess]
) -> None:
    _, films = pair
    time.sleep(COOLDOWN)
    minter = Minter(stack.key_dir)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start, began = fetches(films), time.monotonic()
    for i in range(20):
        # Typed as an access token, so that the kid, not the type, is what is looked at.
        forged = minter.token(attacker, headers={"kid": f"made-up-{i}", "typ": "at+jwt"})
        assert get_film(films, forged) == 401
    cooldowns = 1 + int((time.monotonic() - began) // COOLDOWN)
    # However many forged kids arrive, at most one fetch per cooldown goes to auth (a slow
    # machine may span more than one), and one did: the counter is live, so this cannot
    # pass by counting nothing.
    assert 1 <= fetches(films) - start <= cooldowns
