"""Clients that sign their requests with a private key instead of sending a secret
(`private_key_jwt`, RFC 7523 §2.2): the test stack's `test-signed`, with Authlib's own
client authentication at the token, introspection and revocation endpoints. Each
assertion is taken once; its audience is auth's issuer (or, where a deployment allows it,
an endpoint's URL under AUTH_PUBLIC_URL, never one from the request's Host); a wrong one
is invalid_client, an unreadable one invalid_request. The rules one by one:
tests/unit/test_client_assertions.py; the failure budget:
tests/integration/test_rate_limits.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from jwt.algorithms import ECAlgorithm

from infra.ports import free_port
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
    TEST_OAUTH_CLIENTS,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def signer(kind: str = "rsa", audience: str | None = TEST_ISSUER, **options: Any) -> OAuth2Session:
    """test-signed as Authlib's client: each request carries a fresh assertion for
    `audience` (None: the URL it goes to, Authlib's default), signed with its RSA or EC
    key."""
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


def assertion(audience: str = TEST_ISSUER, key: Any = SIGNED_RSA_KEY, **claims: object) -> str:
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
        account = new_account(stack, http, "signed-introspect")
        answer = client.introspect_token(meta["introspection_endpoint"], token=account.access_token)
        assert answer.status_code == 200, answer.text
        assert answer.json()["active"] is True and answer.json()["sub"] == account.id
    with signer("ec") as client:  # its other key
        again = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        assert own_claims(again["access_token"], meta, "test-signed")["jti"] != claims["jti"]


def test_an_assertion_is_taken_once(http: httpx.Client) -> None:
    signed = assertion()
    first = token_call(http, **with_assertion(signed, **OWN))
    assert first.status_code == 200, first.text
    assert_oauth_error(token_call(http, **with_assertion(signed, **OWN)), 401, "invalid_client")
    # Nor at another endpoint, where a fresh one is taken: the jti is spent for every one.
    introspect = "/v1/auth/introspect"
    again = http.post(introspect, data=with_assertion(signed, token="x"))
    assert_oauth_error(again, 401, "invalid_client")
    fresh = http.post(introspect, data=with_assertion(assertion(), token="x"))
    assert fresh.status_code == 200 and fresh.json() == {"active": False}


def test_an_endpoints_url_is_no_audience_unless_the_deployment_allows_it(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """By default the issuer alone. Allowed, an endpoint's URL under AUTH_PUBLIC_URL, as
    Authlib sends by default; never a URL the request's Host header made up, which a
    client that signs for other servers may have been led to sign for."""
    for audience in (meta["token_endpoint"], f"{stack.auth.url}/v1/auth/introspect"):
        r = token_call(http, **with_assertion(assertion(audience), **OWN))
        assert_oauth_error(r, 401, "invalid_client")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    service = stack.spawn(
        "auth_service",
        "auth-assertion-endpoints",
        AUTH_PORT=str(port),
        AUTH_PUBLIC_URL=public,
        AUTH_CLIENT_ASSERTION_AUDIENCE="issuer_and_endpoints",
    )
    try:
        with signer(audience=None) as client:  # each assertion names the URL it goes to
            token = client.fetch_token(f"{public}/v1/auth/token", grant_type="client_credentials")
            answer = client.introspect_token(
                f"{public}/v1/auth/introspect", token=token["access_token"]
            )
            assert answer.json()["active"] is True
        with httpx.Client(base_url=public, timeout=30) as other:
            for audience in (TEST_ISSUER, f"{public}/v1/auth/revoke"):
                taken = token_call(other, **with_assertion(assertion(audience), **OWN))
                assert taken.status_code == 200, (audience, taken.text)
            forged_host = "http://evil.example/v1/auth/token"
            spoofed = other.post(
                "/v1/auth/token",
                data=with_assertion(assertion(forged_host), **OWN),
                headers={"Host": "evil.example"},
            )
            assert_oauth_error(spoofed, 401, "invalid_client")
    finally:
        service.stop()


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
            assertion(),
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
    named = assertion(iss="test-api", sub="test-api")
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
    signed = assertion(TEST_ISSUER, SIGNED_RSA_KEY, **REFUSED[why])
    r = token_call(http, **with_assertion(signed, **OWN))
    assert_oauth_error(r, 401, "invalid_client")
    assert "assertion" in r.json()["error_description"]


def test_a_key_it_did_not_register_is_refused(http: httpx.Client, meta: dict[str, Any]) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = assertion(key=other)  # under rsa-1, its registered kid
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
    good = assertion()
    sent = OWN | {name: good if value == GOOD else value for name, value in form.items()}
    r = http.post("/v1/auth/token", data=sent, auth=basic or httpx.USE_CLIENT_DEFAULT)
    assert_oauth_error(r, 400, "invalid_request")


class KeyServer:
    """A client's own server, publishing its key set at /jwks.json; counts the fetches."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document, self.fetches = document, 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                body = json.dumps(served.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def failed_fetches(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('auth_client_jwks_fetches_total{outcome="failed"}'):
            return float(line.split()[-1])
    return 0.0


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    return ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": kid}


def test_a_client_that_publishes_its_keys_rotates_them_with_no_change_here(
    stack: Stack,
) -> None:
    """Its jwks_uri is read when first needed and kept; a new kid reads it again at once
    (at most once a second here), made-up kids do not make auth fetch it on every
    request, and a fetch that fails or brings a bad set keeps the keys there were."""
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    published = KeyServer({"keys": [public_jwk(old, "2026-10")]})
    remote = {
        "client_id": "test-remote",
        "name": "Remote Signer",
        "jwks_uri": published.url,
        "client_credentials": True,
    }
    service = stack.spawn(
        "auth_service",
        "auth-jwks-uri",
        AUTH_OAUTH_CLIENTS=json.dumps([*TEST_OAUTH_CLIENTS, remote]),
        AUTH_CLIENT_JWKS_REFETCH_SECONDS="1",
    )
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:

            def own_token(key: ec.EllipticCurvePrivateKey, kid: str) -> int:
                signed = jwt.encode(
                    {
                        "iss": "test-remote",
                        "sub": "test-remote",
                        "aud": TEST_ISSUER,
                        "exp": int(time.time()) + 60,
                        "jti": generate_token(24),
                    },
                    key,
                    algorithm="ES256",
                    headers={"kid": kid},
                )
                return http.post("/v1/auth/token", data=with_assertion(signed, **OWN)).status_code

            assert [own_token(old, "2026-10") for _ in range(3)] == [200] * 3
            assert published.fetches == 1  # kept
            published.document = {"keys": [public_jwk(old, "2026-10"), public_jwk(new, "2026-11")]}
            time.sleep(1.2)  # at least the cooldown since the last fetch
            assert own_token(new, "2026-11") == 200
            assert published.fetches == 2

            started, before = time.monotonic(), published.fetches
            made_up = [own_token(new, f"made-up-{n}") for n in range(10)]
            assert made_up == [401] * 10
            assert published.fetches - before <= (time.monotonic() - started) + 1

            # A set with a private key in it is no set: the keys there were stay.
            published.document = {"keys": [ECAlgorithm.to_jwk(new, as_dict=True)]}
            time.sleep(1.2)
            before = published.fetches
            assert own_token(new, "2026-12") == 401
            assert published.fetches == before + 1
            assert own_token(old, "2026-10") == 200
            published.stop()  # its server away: a fetch fails, the keys there were work
            time.sleep(1.2)
            failed = failed_fetches(http)
            assert own_token(new, "2026-13") == 401
            assert failed_fetches(http) == failed + 1
            assert own_token(new, "2026-11") == 200
    finally:
        service.stop()
        published.stop()
