"""Forged and invalid tokens against auth (/v1/auth/me) and films: all 401 per RFC 6750."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.accounts import new_account
from tests.conftest import Stack
from tests.support import Minter

ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: object) -> str:
    return b64(json.dumps(obj).encode())


def alg_none(m: Minter, with_kid: bool = True) -> str:
    header = {"alg": "none", **({"kid": m.kid} if with_kid else {})}
    return f"{segment(header)}.{segment(m.claims())}."


def hs256_with_public_key(m: Minter) -> str:
    # The classic confusion attack: HMAC keyed with the public PEM everybody can fetch.
    signing_input = f"{segment({'alg': 'HS256', 'kid': m.kid})}.{segment(m.claims())}"
    sig = hmac.new(m.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def tampered(m: Minter) -> str:
    head, _, sig = m.token().split(".")
    return f"{head}.{segment(m.claims(roles=['admin']))}.{sig}"


def past() -> int:
    return int(time.time()) - 120


FORGERIES: dict[str, Callable[[Minter], str | None]] = {
    "missing": lambda m: None,
    "empty bearer": lambda m: "",
    "garbage": lambda m: "not.a.jwt",
    "alg none": alg_none,
    "alg none without kid": lambda m: alg_none(m, with_kid=False),
    "hs256 with the public key": hs256_with_public_key,
    "other rsa key, our kid": lambda m: m.token(ATTACKER_KEY),
    "other rsa key, its own kid": lambda m: m.token(ATTACKER_KEY, headers={"kid": "attacker"}),
    "tampered payload": tampered,
    "expired": lambda m: m.token(exp=past(), iat=past() - 900),
    "wrong issuer": lambda m: m.token(iss="https://evil.example"),
    "wrong audience": lambda m: m.token(aud="someone-else"),
    "no exp": lambda m: m.token(exp=None),
    "no sub": lambda m: m.token(sub=None),
    "no jti": lambda m: m.token(jti=None),
    "not yet valid": lambda m: m.token(nbf=int(time.time()) + 3600),
    "roles not a list": lambda m: m.token(roles="admin"),
    "a logout token's type": lambda m: m.token(headers={"typ": "logout+jwt"}),
    "truncated signature": lambda m: m.token()[:-10],
}


@pytest.mark.parametrize("target", ["auth", "films"])
@pytest.mark.parametrize("kind", list(FORGERIES))
def test_forged_token_is_401(stack: Stack, kind: str, target: str) -> None:
    token = FORGERIES[kind](Minter(stack.key_dir))
    headers = {} if token is None else {"Authorization": f"Bearer {token}".strip()}
    url = f"{stack.auth.url}/v1/auth/me" if target == "auth" else f"{stack.films.url}/v1/films/1"
    r = httpx.get(url, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert r.json()["error"] == "invalid_token"


def test_wrong_scheme_is_401(stack: Stack, films_token: str) -> None:
    r = httpx.get(f"{stack.films.url}/v1/films", headers={"Authorization": f"Basic {films_token}"})
    assert r.status_code == 401


def test_valid_signature_for_a_deleted_account_is_401_at_auth(stack: Stack) -> None:
    r = httpx.get(
        f"{stack.auth.url}/v1/auth/me",
        headers={"Authorization": f"Bearer {Minter(stack.key_dir).token()}"},
    )
    assert r.status_code == 401


def test_control_a_well_formed_token_passes(stack: Stack, films_token: str) -> None:
    """The forgeries fail for their flaw, not because the test's minting is off."""
    r = httpx.get(
        f"{stack.films.url}/v1/films/1", headers={"Authorization": f"Bearer {films_token}"}
    )
    assert r.status_code == 200


def test_films_may_require_rfc_9068s_type(stack: Stack, films_token: str) -> None:
    """FILMS_REQUIRE_AT_JWT: a plain JWT (as `Minter` and, by default, auth type them) is
    refused; auth's own tokens, which the test stack types at+jwt, pass."""
    with httpx.Client(timeout=30) as http:
        from_auth = new_account(stack, http, "typed-token").access_token
    films = stack.spawn("films_service", "films-at-jwt", FILMS_REQUIRE_AT_JWT="true")
    try:
        for token, status in (
            (films_token, 401),
            (Minter(stack.key_dir).token(headers={"typ": "at+jwt"}), 200),
            (from_auth, 200),
        ):
            r = httpx.get(f"{films.url}/v1/films", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, r.text
    finally:
        films.stop()
