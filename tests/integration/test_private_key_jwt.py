"""Clients that sign their requests with a private key instead of sending a secret
(`private_key_jwt`, RFC 7523 §2.2): the test stack's `test-signed`, with Authlib's own
client authentication at the token, introspection and revocation endpoints. Each
assertion is taken once; a wrong one is invalid_client, an unreadable one invalid_request.
The rules one by one: tests/unit/test_client_assertions.py; the failure budget:
tests/integration/test_rate_limits.py."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from tests.accounts import bearer, new_account
from tests.conftest import Stack
from tests.integration.test_client_credentials import own_claims
from tests.integration.test_oauth import assert_oauth_error, token_call
from tests.integration.test_oauth_code import code_for_url
from tests.support import (
    RESOURCE_SECRET,
    SIGNED_EC_KEY,
    SIGNED_REDIRECT,
    SIGNED_RSA_KEY,
    TEST_ISSUER,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def signer(kind: str = "rsa", audience: str | None = None, **options: Any) -> OAuth2Session:
    """test-signed as Authlib's client: each request carries a fresh assertion, for the
    URL it goes to (or `audience`), signed with its RSA or EC key."""
    key = (
        RSAKey.import_key(pem(SIGNED_RSA_KEY))
        if kind == "rsa"
        else ECKey.import_key(pem(SIGNED_EC_KEY))
    )
    algorithm = "RS256" if kind == "rsa" else "ES256"
    method = PrivateKeyJWT(audience, headers={"kid": f"{kind}-1"}, alg=algorithm)
    return OAuth2Session(
        client_id="test-signed",
        client_secret=key,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        **options,
    )


def assertion(audience: str, key: Any = SIGNED_RSA_KEY, **claims: object) -> str:
    """One assertion, as a client would sign it by hand (an override of None leaves a
    claim out)."""
    now = int(time.time())
    body: dict[str, object] = {
        "iss": "test-signed",
        "sub": "test-signed",
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": generate_token(24),
    }
    body = {k: v for k, v in (body | claims).items() if v is not None}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "rsa-1"})


def with_assertion(signed: str, **form: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed} | form


OWN = {"grant_type": "client_credentials"}
GOOD = "(a good assertion)"


def test_a_service_signs_for_its_own_token_and_to_introspect(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    for endpoint in ("token", "introspection"):
        assert "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]
        algorithms = meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert {"RS256", "PS256", "ES256", "EdDSA"} <= set(algorithms)
        assert not {"none", "HS256"} & set(algorithms)
    with signer() as client:
        token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        assert token["scope"] == "films" and "refresh_token" not in token
        claims = own_claims(token["access_token"], meta, "test-signed")
        assert claims["scope"] == "films"
        films = httpx.get(f"{stack.films.url}/v1/films", headers=bearer(token["access_token"]))
        assert films.status_code == 200
        # Its assertion here names the introspection endpoint: the URL it is sent to.
        account = new_account(stack, http, "signed-introspect")
        answer = client.introspect_token(meta["introspection_endpoint"], token=account.access_token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["active"] is True and answer.json()["sub"] == account.id
    # Its EC key, and auth's issuer as the audience (as RFC 7523bis asks).
    with signer("ec", audience=TEST_ISSUER) as client:
        again = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        assert own_claims(again["access_token"], meta, "test-signed")["jti"] != claims["jti"]


def test_an_assertion_is_taken_once(http: httpx.Client, meta: dict[str, Any]) -> None:
    signed = assertion(meta["token_endpoint"])
    first = token_call(http, **with_assertion(signed, **OWN))
    assert first.status_code == 200, first.text
    assert_oauth_error(token_call(http, **with_assertion(signed, **OWN)), 401, "invalid_client")
    # Nor at another endpoint: the jti is spent for every one.
    again = http.post("/v1/auth/introspect", data=with_assertion(signed, token="x"))
    assert_oauth_error(again, 401, "invalid_client")


def test_an_application_signs_to_redeem_its_code_refresh_and_revoke(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    account = new_account(stack, http, "signed-code")
    verifier = generate_token(48)
    with signer(
        redirect_uri=SIGNED_REDIRECT, code_challenge_method="S256", scope="openid films"
    ) as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier
        )
        code = code_for_url(http, account, url)
        token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier)
        assert token["scope"] == "openid films" and token["id_token"]
        # Its session is its own: nobody refreshes it without proving to be test-signed.
        unproved = token_call(
            http, grant_type="refresh_token", refresh_token=token["refresh_token"]
        )
        assert_oauth_error(unproved, 400, "invalid_grant")
        secret = token_call(
            http,
            grant_type="refresh_token",
            refresh_token=token["refresh_token"],
            client_id="test-signed",
            client_secret="anything",
        )
        assert_oauth_error(secret, 401, "invalid_client")  # it has no secret to give
        refreshed = client.refresh_token(meta["token_endpoint"], token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"]
        revoked = client.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
        assert revoked.status_code == 200, revoked.text
    films = httpx.get(f"{stack.films.url}/v1/films", headers=bearer(refreshed["access_token"]))
    assert films.status_code in (200, 401)  # 401 once films hears the session ended
    again = token_call(
        http,
        **with_assertion(
            assertion(meta["token_endpoint"]),
            grant_type="refresh_token",
            refresh_token=refreshed["refresh_token"],
        ),
    )
    assert_oauth_error(again, 400, "invalid_grant")


def test_a_client_with_a_key_has_no_secret_and_one_with_a_secret_signs_nothing(
    http: httpx.Client, meta: dict[str, Any]
) -> None:
    for form in ({"client_id": "test-signed", "client_secret": "x"}, {"client_id": "test-signed"}):
        assert_oauth_error(token_call(http, **OWN, **form), 401, "invalid_client")
    basic = http.post("/v1/auth/token", data=OWN, auth=("test-signed", ""))
    assert_oauth_error(basic, 401, "invalid_client")
    # test-api has a secret and no keys: an assertion in its name is refused, whatever key.
    named = assertion(meta["token_endpoint"], iss="test-api", sub="test-api")
    assert_oauth_error(token_call(http, **with_assertion(named, **OWN)), 401, "invalid_client")
    right = http.post("/v1/auth/token", data=OWN, auth=("test-api", RESOURCE_SECRET))
    assert right.status_code == 200


REFUSED: dict[str, dict[str, object]] = {
    "another server's audience": {"aud": "https://elsewhere.example/token"},
    "expired": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3700},
    "no jti": {"jti": None},
    "another client's subject": {"sub": "test-api"},
}


@pytest.mark.parametrize("why", list(REFUSED))
def test_a_wrong_assertion_is_invalid_client(
    http: httpx.Client, meta: dict[str, Any], why: str
) -> None:
    signed = assertion(meta["token_endpoint"], **REFUSED[why])
    r = token_call(http, **with_assertion(signed, **OWN))
    assert_oauth_error(r, 401, "invalid_client")
    assert "assertion" in r.json()["error_description"]


def test_a_key_it_did_not_register_is_refused(http: httpx.Client, meta: dict[str, Any]) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = assertion(meta["token_endpoint"], key=other)  # under rsa-1, its registered kid
    assert_oauth_error(token_call(http, **with_assertion(signed, **OWN)), 401, "invalid_client")


@pytest.mark.parametrize(
    ("form", "basic"),
    [
        ({"client_assertion_type": "urn:other", "client_assertion": GOOD}, None),
        ({"client_assertion_type": ASSERTION_TYPE}, None),
        ({"client_assertion": GOOD}, None),
        ({"client_assertion_type": ASSERTION_TYPE, "client_assertion": "not a jwt"}, None),
        (with_assertion(GOOD, client_secret="x"), None),  # two ways at once
        (with_assertion(GOOD, client_id="test-api"), None),  # not the client it names
        (with_assertion(GOOD), ("test-signed", "x")),  # HTTP Basic besides
    ],
)
def test_an_unreadable_or_doubled_assertion_is_invalid_request(
    http: httpx.Client, meta: dict[str, Any], form: dict[str, str], basic: tuple[str, str] | None
) -> None:
    good = assertion(meta["token_endpoint"])
    sent = OWN | {name: good if value == GOOD else value for name, value in form.items()}
    r = http.post("/v1/auth/token", data=sent, auth=basic or httpx.USE_CLIENT_DEFAULT)
    assert_oauth_error(r, 400, "invalid_request")
