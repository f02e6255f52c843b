"""The standards a third-party library relies on: OpenID Provider metadata, and the RFC 6749
token endpoint, driven by Authlib (a real OAuth2/OIDC client) and checked with joserfc
against the published JWKS; then the endpoint's refusals, each an RFC 6749 §5.2 answer."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.accounts import PASSWORD, new_account
from tests.conftest import Stack
from tests.integration.conftest import DISCOVERY
from tests.support import TEST_AUDIENCE, TEST_ISSUER, unique_email


@pytest.fixture
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test stack speaks plain HTTP on 127.0.0.1; Authlib insists on https otherwise.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


def test_discovery_metadata_is_valid_openid_provider_metadata(
    stack: Stack, http: httpx.Client, insecure_transport: None
) -> None:
    answer = http.get(DISCOVERY)
    assert answer.status_code == 200
    meta = OpenIDProviderMetadata(answer.json())
    assert meta["issuer"] == TEST_ISSUER  # the `iss` of every token
    assert meta["token_endpoint"] == f"{stack.auth.url}/v1/auth/token"
    assert meta["jwks_uri"] == f"{stack.auth.url}/.well-known/jwks.json"
    # The test stack names the web front end's page (AUTH_AUTHORIZATION_ENDPOINT).
    assert meta["authorization_endpoint"] == f"http://localhost:{stack.web_port}/oauth/authorize"
    assert meta["grant_types_supported"] == [
        "authorization_code",
        "password",
        "refresh_token",
        "client_credentials",  # test-api may use it
    ]
    assert meta["token_endpoint_auth_methods_supported"] == [
        "none",
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["scopes_supported"] == ["openid", "email", "films"]
    assert meta["userinfo_endpoint"] == f"{stack.auth.url}/v1/auth/oauth/userinfo"
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    meta.validate()  # every member, as Authlib checks an OpenID Provider's
    assert http.get(meta["jwks_uri"]).status_code == 200


def verified_claims(token: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The token checked as an outside resource server would: keys from `jwks_uri`."""
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"  # RFC 9068 §2.1
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": TEST_AUDIENCE},
        exp={"essential": True},
        sub={"essential": True},
        sid={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def test_authlib_logs_in_refreshes_and_verifies_against_the_jwks(
    stack: Stack, http: httpx.Client, insecure_transport: None
) -> None:
    account = new_account(stack, http, "authlib")
    with OAuth2Session(client_id="films-cli", token_endpoint_auth_method="none") as client:
        meta = client.get(f"{stack.auth.url}{DISCOVERY}", withhold_token=True).json()
        token = client.fetch_token(
            meta["token_endpoint"],
            grant_type="password",
            username=account.email,
            password=PASSWORD,
        )
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 900
        first = verified_claims(token["access_token"], meta)

        refreshed = client.refresh_token(
            meta["token_endpoint"], refresh_token=token["refresh_token"]
        )
        second = verified_claims(refreshed["access_token"], meta)
        assert refreshed["refresh_token"] != token["refresh_token"]  # rotated
        assert second["sub"] == first["sub"] == account.id
        assert second["sid"] == first["sid"] != account.sid  # one login, a new session

        # The session keeps working with the refreshed token, for auth itself too.
        me = client.get(f"{stack.auth.url}/v1/auth/me")  # Authlib adds the bearer token
        assert me.status_code == 200
        assert me.json()["email"] == account.email


def token_call(http: httpx.Client, **form: str) -> httpx.Response:
    return http.post("/v1/auth/token", data=form)


def assert_oauth_error(r: httpx.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert r.headers["cache-control"] == "no-store"


def test_a_token_answer_is_never_cached(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "no-store")
    r = token_call(http, grant_type="password", username=account.email, password=PASSWORD)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    assert set(r.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),
        ({"grant_type": "device_code"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "invalid_request"),
        ({"grant_type": "PASSWORD", "username": "a@example.com", "password": "x"},
         "unsupported_grant_type"),
        ({"grant_type": "password"}, "invalid_request"),
        ({"grant_type": "password", "username": "a@example.com"}, "invalid_request"),
        ({"grant_type": "password", "password": "long enough pw"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "password", "username": "a@example.com", "password": "x" * 1025},
         "invalid_request"),
        ({"grant_type": "password", "username": "nobody@example.com", "password": "guess-123"},
         "invalid_grant"),
        ({"grant_type": "password", "username": "not an email", "password": "guess-123"},
         "invalid_grant"),
        ({"grant_type": "password", "username": "a\x00b@example.com", "password": "guess-123"},
         "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, "invalid_grant"),
    ],
)  # fmt: skip
def test_refusals_follow_rfc_6749(http: httpx.Client, form: dict[str, str], error: str) -> None:
    assert_oauth_error(token_call(http, **form), 400, error)


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "password", "username": "a@example.com", "password": "x"}',
         "application/json"),
        (b"", FORM),
        (b"grant_type=password&grant_type=refresh_token&refresh_token=x", FORM),
        (b"grant_type=refresh_token&refresh_token=x&refresh_token=y", FORM),
        (b"--b\r\nContent-Disposition: form-data; name=grant_type\r\n\r\npassword\r\n--b--\r\n",
         "multipart/form-data; boundary=b"),
        (b"grant_type=password", "text/plain"),
        (b"grant_type=password", ""),
    ],
    ids=["json", "empty", "repeated grant", "repeated token", "multipart", "text", "no type"],
)  # fmt: skip
def test_malformed_bodies_are_invalid_request(
    http: httpx.Client, content: bytes, content_type: str
) -> None:
    r = http.post("/v1/auth/token", content=content, headers={"Content-Type": content_type})
    assert_oauth_error(r, 400, "invalid_request")


def test_undecodable_values_are_a_clean_400(http: httpx.Client) -> None:
    r = http.post(
        "/v1/auth/token",
        content=b"grant_type=refresh_token&refresh_token=%ff%fe%00",
        headers={"Content-Type": FORM},
    )
    assert r.status_code == 400
    assert r.json()["error"] in {"invalid_request", "invalid_grant"}


def test_unverified_accounts_get_invalid_grant(stack: Stack, http: httpx.Client) -> None:
    email = unique_email("unverified")
    assert http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).is_success
    r = token_call(http, grant_type="password", username=email, password=PASSWORD)
    assert_oauth_error(r, 400, "invalid_grant")


def test_a_client_id_is_ignored_and_a_used_refresh_token_refused(
    stack: Stack, http: httpx.Client
) -> None:
    account = new_account(stack, http, "public-client")
    first = token_call(
        http, grant_type="password", username=account.email, password=PASSWORD, client_id="x"
    ).json()
    second = token_call(http, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    again = token_call(http, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert_oauth_error(again, 400, "invalid_grant")


def test_the_token_endpoint_shares_the_logins_lockout_and_audit(
    stack: Stack, http: httpx.Client
) -> None:
    account = new_account(stack, http, "oauth-lockout")
    for _ in range(30):  # the default threshold
        r = token_call(http, grant_type="password", username=account.email, password="wrong pw")
        assert_oauth_error(r, 400, "invalid_grant")
    locked = token_call(http, grant_type="password", username=account.email, password=PASSWORD)
    assert_oauth_error(locked, 400, "invalid_grant")
    assert int(locked.headers["Retry-After"]) >= 1
    # The same lock holds at the JSON login: one address, one budget.
    json_login = http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert json_login.status_code == 429
    assert json_login.json()["error"] == "account_locked"
    with sqlite3.connect(stack.work / "auth.db") as db:
        events = [
            row[0]
            for row in db.execute(
                "SELECT event FROM audit_events WHERE email = ? ORDER BY id", (account.email,)
            )
        ]
    assert events.count("login_failed") == 30
    assert "lockout" in events
