"""The client credentials grant (RFC 6749 §4.4): a service registered for it gets access
tokens of its own, as Authlib asks for them, and calls the films API as itself. Such a
token speaks for no person: the person's own routes refuse it, and no session ends it."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.accounts import bearer, new_account
from tests.conftest import Stack
from tests.integration.test_oauth import assert_oauth_error, token_call
from tests.support import RESOURCE_SECRET, SERVER_SECRET, TEST_AUDIENCE, TEST_ISSUER


def own_claims(token: str, meta: dict[str, Any], client_id: str = "test-api") -> dict[str, Any]:
    """`client_id`'s own token, checked as an outside resource server would: keys from
    `jwks_uri`."""
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"  # RFC 9068 §2.1
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": TEST_ISSUER},
        aud={"essential": True, "value": TEST_AUDIENCE},
        exp={"essential": True},
        sub={"essential": True, "value": client_id},
        client_id={"essential": True, "value": client_id},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def test_a_service_gets_a_token_of_its_own_and_reads_the_catalogue(
    stack: Stack, http: httpx.Client, meta: dict[str, Any], service: OAuth2Session
) -> None:
    assert "client_credentials" in meta["grant_types_supported"]
    token = service.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["scope"] == "films"
    assert token["expires_in"] > 0
    assert "refresh_token" not in token and "id_token" not in token  # §4.4.3: it asks again
    claims = own_claims(token["access_token"], meta)
    assert claims["scope"] == "films" and claims["roles"] == []
    assert "sid" not in claims and "amr" not in claims  # no session, nobody signed in

    films = f"{stack.films.url}/v1/films"
    as_service = bearer(token["access_token"])
    assert httpx.get(films, headers=as_service).status_code == 200
    assert httpx.get(f"{films}/1", headers=as_service).status_code == 200
    mine = httpx.get(f"{stack.films.url}/v1/me/favourites", headers=as_service)
    assert mine.status_code == 403 and mine.json()["error"] == "forbidden", mine.text
    for path in ("/v1/auth/me", "/v1/auth/oauth/userinfo", "/v1/auth/sessions"):
        assert http.get(path, headers=as_service).status_code == 401, path
    deliveries = httpx.get(
        f"{stack.mailer.url}/v1/deliveries", params={"email": "a@example.com"}, headers=as_service
    )
    assert deliveries.status_code == 403  # the mailer takes no application's token
    assert deliveries.json()["error"] == "insufficient_scope"
    film = {"title": "X", "year": 2000, "genres": [], "director": "Y", "runtime_minutes": 90}
    edit = httpx.post(films, json=film, headers=as_service)
    assert edit.status_code == 403 and edit.json()["error"] == "forbidden"  # no roles

    answer = service.introspect_token(meta["introspection_endpoint"], token=token["access_token"])
    assert answer.json() | {"exp": 0, "iat": 0, "jti": ""} == {
        "active": True,
        "token_type": "Bearer",
        "client_id": "test-api",
        "scope": "films",
        "sub": "test-api",
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "roles": [],
        "exp": 0,
        "iat": 0,
        "jti": "",
    }

    with sqlite3.connect(stack.work / "auth.db") as db:
        rows = db.execute(
            "SELECT detail FROM audit_events WHERE event = 'client_token' ORDER BY id DESC"
        ).fetchall()
    assert {"client": "test-api", "scope": "films"} in [json.loads(r[0]) for r in rows]


def test_it_gets_only_the_scopes_a_service_may_have(
    http: httpx.Client, meta: dict[str, Any], service: OAuth2Session
) -> None:
    """A person's scopes are not a service's: they are left out, as unknown ones are, and
    nothing left is invalid_scope."""
    token = service.fetch_token(
        meta["token_endpoint"], grant_type="client_credentials", scope="openid films profile"
    )
    assert token["scope"] == "films"
    basic = ("test-api", RESOURCE_SECRET)
    for scope in ("openid", "email openid", "admin"):
        r = http.post(
            "/v1/auth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=basic
        )
        assert_oauth_error(r, 400, "invalid_scope")


def test_only_a_confidential_client_registered_for_it_gets_one(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    grant = {"grant_type": "client_credentials"}
    for form, status, error in (
        ({}, 401, "invalid_client"),  # nobody
        ({"client_id": "test-spa"}, 401, "invalid_client"),  # public: nothing to prove
        ({"client_id": "test-api"}, 401, "invalid_client"),  # no secret
        ({"client_id": "test-api", "client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "test-server", "client_secret": SERVER_SECRET}, 400, "unauthorized_client"),
    ):
        assert_oauth_error(token_call(http, **grant, **form), status, error)
    public_basic = http.post("/v1/auth/token", data=grant, auth=("test-spa", ""))
    assert_oauth_error(public_basic, 401, "invalid_client")
    assert public_basic.headers["www-authenticate"] == 'Basic realm="token"'
    with (
        OAuth2Session(
            client_id="test-server",
            client_secret=SERVER_SECRET,
            token_endpoint_auth_method="client_secret_post",
        ) as app,
        pytest.raises(OAuthError) as refused,
    ):
        app.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert refused.value.error == "unauthorized_client"

    # The person's own sign-out ends no client's token: it has no session.
    account = new_account(stack, http, "client-credentials-bystander")
    posted = http.post("/v1/auth/token", data=grant, auth=("test-api", RESOURCE_SECRET))
    assert posted.status_code == 200, posted.text
    held = posted.json()["access_token"]
    assert http.post("/v1/auth/revoke", data={"token": held}).status_code == 200  # nothing ends
    assert http.post("/v1/auth/logout", json={"refresh_token": account.refresh_token}).is_success
    assert httpx.get(f"{stack.films.url}/v1/films", headers=bearer(held)).status_code == 200
