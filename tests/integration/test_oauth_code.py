"""The authorization code grant with PKCE at auth, driven by Authlib as an application
would drive it: the authorization URL it builds, a code for it (asked for here as the web
front end asks, with a signed-in person's token), and the token endpoint's answer, checked
against the published JWKS. Then every way a redemption is refused; the pages of the flow
are tests/web/test_oauth_pages.py's."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.accounts import PASSWORD, Account, bearer, grant, login, new_account
from tests.conftest import Stack
from tests.integration.test_oauth import assert_oauth_error, token_call
from tests.support import (
    FIRST_PARTY_REDIRECT,
    SERVER_REDIRECT,
    SERVER_SECRET,
    SPA_REDIRECT,
    SPA_SIGNED_OUT,
    SPA_WEB_REDIRECT,
    TEST_AUDIENCE,
    TEST_ISSUER,
    Minter,
)

USERINFO = "/v1/auth/oauth/userinfo"


def code_for_url(http: httpx.Client, account: Account, url: str) -> str:
    """What the web front end does once the person allowed it: a code for the request in
    the authorization URL, asked for with the person's token and their yes."""
    asked = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    assert asked["response_type"] == "code"
    assert asked["code_challenge_method"] == "S256"
    body: dict[str, str | bool] = {
        name: asked[name]
        for name in ("client_id", "redirect_uri", "code_challenge", "scope", "nonce")
        if name in asked
    }
    body["consented"] = True
    r = http.post("/v1/auth/oauth/authorize", json=body, headers=account.bearer)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["expires_in"] == 60
    code: str = r.json()["code"]
    return code


def id_claims(token: str, meta: dict[str, Any], client_id: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(httpx.get(meta["jwks_uri"]).json())
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256"])
    assert decoded.header["typ"] == "JWT"  # not an access token's at+jwt
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": TEST_ISSUER},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        auth_time={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def spa(**options: Any) -> OAuth2Session:
    return OAuth2Session(
        client_id="test-spa",
        redirect_uri=SPA_REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        **options,
    )


def signed_in(
    client: OAuth2Session, http: httpx.Client, account: Account, meta: dict[str, Any]
) -> dict[str, Any]:
    """The application's tokens, once the person allowed it (`code_for_url`)."""
    verifier = generate_token(48)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    code = code_for_url(http, account, url)
    token: dict[str, Any] = client.fetch_token(
        meta["token_endpoint"], code=code, code_verifier=verifier
    )
    return token


def server(**options: Any) -> OAuth2Session:
    return OAuth2Session(
        client_id="test-server",
        client_secret=SERVER_SECRET,
        redirect_uri=SERVER_REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        **options,
    )


def test_authlib_signs_in_with_a_code_and_pkce(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    assert meta["authorization_endpoint"].endswith("/oauth/authorize")
    assert meta["code_challenge_methods_supported"] == ["S256"]
    account = new_account(stack, http, "oauth-code")
    verifier = generate_token(64)
    with spa(scope="openid email films profile") as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce="n-0S6_WzA2Mj"
        )
        code = code_for_url(http, account, url)
        token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier)
        assert token["scope"] == "openid email films"  # "profile" is not given
        claims = id_claims(token["id_token"], meta, "test-spa")
        assert claims["sub"] == account.id
        assert claims["nonce"] == "n-0S6_WzA2Mj"
        assert claims["email"] == account.email and claims["email_verified"] is True
        assert claims["amr"] == ["email"]  # the session the person allowed it from
        assert claims["sid"] != account.sid  # a session of the application's own

        # The access token is the application's (RFC 9068's client_id and scope): films
        # takes it, for the films scope, and so does auth; the ID token is for the
        # application only, and neither takes it.
        films = httpx.get(f"{stack.films.url}/v1/films", headers=bearer(token["access_token"]))
        assert films.status_code == 200
        access = jose_jwt.decode(token["access_token"], KeySet.import_key_set(
            httpx.get(meta["jwks_uri"]).json()), algorithms=["RS256"]).claims  # fmt: skip
        assert access["aud"] == TEST_AUDIENCE and access["sid"] == claims["sid"]
        assert access["client_id"] == "test-spa" and access["scope"] == "openid email films"
        for url_, who in ((f"{stack.films.url}/v1/films", "films"), (USERINFO, "auth")):
            r = (httpx if who == "films" else http).get(url_, headers=bearer(token["id_token"]))
            assert r.status_code == 401, who

        # OpenID Connect's userinfo, as a library asks it with the access token.
        assert meta["userinfo_endpoint"] == f"{stack.auth.url}/v1/auth/oauth/userinfo"
        info = http.get(meta["userinfo_endpoint"], headers=bearer(token["access_token"]))
        assert info.status_code == 200 and info.headers["cache-control"] == "no-store"
        assert info.json() == {"sub": account.id, "email": account.email, "email_verified": True}

        # It refreshes like any other session, and is listed among the person's.
        refreshed = client.refresh_token(meta["token_endpoint"], token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"]
        again = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
        assert (again["client_id"], again["scope"]) == ("test-spa", "openid email films")
        listed = http.get("/v1/auth/sessions", headers=account.bearer).json()["items"]
        mine = [s for s in listed if s["id"] == claims["sid"]]
        assert mine and mine[0]["application"] == "Film Diary"
        assert mine[0]["client_id"] == "test-spa"


def test_without_openid_there_is_no_id_token(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    account = new_account(stack, http, "oauth-plain")
    with spa() as client:
        token = signed_in(client, http, account, meta)
    assert "id_token" not in token
    assert token["scope"] == ""
    # No `email` scope: userinfo names the account only. The person's own session gets all.
    info = http.get("/v1/auth/oauth/userinfo", headers=bearer(token["access_token"]))
    assert info.json() == {"sub": account.id}
    own = http.get("/v1/auth/oauth/userinfo", headers=account.bearer).json()
    assert own == {"sub": account.id, "email": account.email, "email_verified": True}
    assert http.get("/v1/auth/oauth/userinfo").status_code == 401


def redeem(http: httpx.Client, code: str, verifier: str, /, **form: str) -> httpx.Response:
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": SPA_REDIRECT,
        "code_verifier": verifier,
        "client_id": "test-spa",
    }
    return token_call(http, **(fields | form))


def fresh_code(http: httpx.Client, account: Account, meta: dict[str, Any]) -> tuple[str, str]:
    verifier = generate_token(48)
    with spa(scope="openid films") as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier
        )
    return code_for_url(http, account, url), verifier


def test_a_code_redeemed_twice_with_its_verifier_ends_the_first_session(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    account = new_account(stack, http, "oauth-twice")
    code, verifier = fresh_code(http, account, meta)
    first = redeem(http, code, verifier)
    assert first.status_code == 200, first.text
    # A leaked code without its verifier: refused, and it ends nothing.
    assert_oauth_error(redeem(http, code, generate_token(48)), 400, "invalid_grant")
    assert http.get(USERINFO, headers=bearer(first.json()["access_token"])).is_success
    # With it: whoever redeemed it first may not be the application, so its session ends.
    assert_oauth_error(redeem(http, code, verifier), 400, "invalid_grant")
    refresh = token_call(
        http, grant_type="refresh_token", refresh_token=first.json()["refresh_token"]
    )
    assert_oauth_error(refresh, 400, "invalid_grant")
    me = http.get(USERINFO, headers=bearer(first.json()["access_token"]))
    assert me.status_code == 401
    with sqlite3.connect(stack.work / "auth.db") as db:
        events = [row[0] for row in db.execute(
            "SELECT event FROM audit_events WHERE user_id = ? ORDER BY id",
            (account.id.replace("-", ""),),
        )]  # fmt: skip
    assert events[-3:] == ["oauth_authorized", "login_ok", "oauth_code_reused"], events


def test_every_wrong_redemption_is_invalid_grant(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    account = new_account(stack, http, "oauth-wrong")
    code, verifier = fresh_code(http, account, meta)
    other = generate_token(48)
    for form in (
        {"code_verifier": other},  # not the verifier of its challenge
        {"redirect_uri": SPA_REDIRECT + "/other"},  # not the redirect URI it was sent to
        {"code": code[:-1] + ("A" if code[-1] != "A" else "B")},  # no such code
    ):
        assert_oauth_error(redeem(http, code, verifier, **form), 400, "invalid_grant")
    # Another client's code, with its own client: refused, and the code is not spent.
    server = token_call(
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=SPA_REDIRECT,
        code_verifier=verifier,
        client_id="test-server",
        client_secret=SERVER_SECRET,
    )
    assert_oauth_error(server, 400, "invalid_grant")
    assert redeem(http, code, verifier).status_code == 200

    # A code past its minute.
    late, late_verifier = fresh_code(http, account, meta)
    with sqlite3.connect(stack.work / "auth.db") as db:
        db.execute("UPDATE oauth_codes SET expires_at = '2020-01-01 00:00:00.000000'")
    assert_oauth_error(redeem(http, late, late_verifier), 400, "invalid_grant")

    # A disabled account's code.
    code, verifier = fresh_code(http, account, meta)
    with sqlite3.connect(stack.work / "auth.db") as db:
        db.execute(
            "UPDATE users SET disabled_at = '2026-01-01 00:00:00.000000' WHERE email = ?",
            (account.email,),
        )
    assert_oauth_error(redeem(http, code, verifier), 400, "invalid_grant")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"code": None}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
        ({"code_verifier": None}, "invalid_request"),
        ({"code_verifier": "short"}, "invalid_request"),  # RFC 7636: 43 to 128 characters
        ({"code_verifier": "x" * 42 + "!"}, "invalid_request"),
        ({"client_id": None}, "invalid_request"),
    ],
)
def test_an_incomplete_code_grant_is_invalid_request(
    http: httpx.Client, form: dict[str, str | None], error: str
) -> None:
    fields: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": "c" * 43,
        "redirect_uri": SPA_REDIRECT,
        "code_verifier": "v" * 43,
        "client_id": "test-spa",
    }
    fields |= form
    kept = {name: value for name, value in fields.items() if value is not None}
    assert_oauth_error(token_call(http, **kept), 400, error)


def test_clients_prove_who_they_are(stack: Stack, http: httpx.Client, meta: dict[str, Any]) -> None:
    """A confidential client gives its secret (HTTP Basic or the form); a public one gives
    none; an unknown one is refused. Each refusal is 401 invalid_client."""
    account = new_account(stack, http, "oauth-server")
    verifier = generate_token(48)
    grant = {"grant_type": "authorization_code", "code": "c" * 43, "code_verifier": verifier}
    refusals: list[tuple[tuple[str, str] | None, dict[str, str]]] = [
        (None, {"client_id": "test-server"}),  # no secret
        (("test-server", "wrong"), {}),
        (None, {"client_id": "test-server", "client_secret": "wrong"}),
        (None, {"client_id": "nobody"}),
        (None, {"client_id": "test-spa", "client_secret": "a public client has none"}),
    ]
    for auth, form in refusals:
        data = grant | form | {"redirect_uri": SERVER_REDIRECT}
        r = http.post("/v1/auth/token", data=data, auth=auth or httpx.USE_CLIENT_DEFAULT)
        assert_oauth_error(r, 401, "invalid_client")
        assert ("www-authenticate" in r.headers) == (auth is not None)

    with server() as client:
        client.scope = "openid email films"  # films is not among the scopes it may have
        token = signed_in(client, http, account, meta)
    assert token["scope"] == "openid email"
    assert id_claims(token["id_token"], meta, "test-server")["sub"] == account.id
    assert "nonce" not in id_claims(token["id_token"], meta, "test-server")
    served = http.post(
        "/v1/auth/oauth/client", json={"client_id": "test-server", "redirect_uri": SERVER_REDIRECT}
    )
    assert served.json()["scopes"] == ["openid", "email"]


def test_the_authorize_call_checks_the_client_and_the_challenge(
    stack: Stack, http: httpx.Client
) -> None:
    account = new_account(stack, http, "oauth-checks")
    known = http.post(
        "/v1/auth/oauth/client", json={"client_id": "test-spa", "redirect_uri": SPA_REDIRECT}
    )
    assert known.json() == {
        "client_id": "test-spa",
        "name": "Film Diary",
        "trusted": False,
        "issuer": TEST_ISSUER,
        "scopes": ["openid", "email", "films"],
        "require_pushed_authorization_requests": False,
        "request": None,
    }
    for pair in (
        {"client_id": "nobody", "redirect_uri": SPA_REDIRECT},
        {"client_id": "test-spa", "redirect_uri": SPA_REDIRECT + "x"},  # compared exactly
        {"client_id": "test-spa", "redirect_uri": SERVER_REDIRECT},  # another client's
    ):
        r = http.post("/v1/auth/oauth/client", json=pair)
        assert r.status_code == 400 and r.json()["error"] == "invalid_client", r.text
        asked = pair | {"code_challenge": "c" * 43}
        r = http.post("/v1/auth/oauth/authorize", json=asked, headers=account.bearer)
        assert r.status_code == 400 and r.json()["error"] == "invalid_client", r.text

    good = {"client_id": "test-spa", "redirect_uri": SPA_REDIRECT, "code_challenge": "c" * 43}
    assert http.post("/v1/auth/oauth/authorize", json=good).status_code == 401
    for bad in (
        {"code_challenge": "c" * 42},
        {"code_challenge": "c" * 42 + "="},
        {"code_challenge_method": "plain"},
        {"nonce": ""},
    ):
        r = http.post("/v1/auth/oauth/authorize", json=good | bad, headers=account.bearer)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"] == "invalid_request"


def test_authlib_reports_a_refusal_as_the_standard_error(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    with spa() as client, pytest.raises(OAuthError) as refused:
        client.fetch_token(meta["token_endpoint"], code="c" * 43, code_verifier="v" * 43)
    assert refused.value.error == "invalid_grant"


def test_an_applications_session_reads_who_it_is_and_no_more(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """Its tokens are the person's on the films API (with the films scope), and read
    userinfo; `/v1/auth/me` and what acts on the account (sessions, password, codes for
    other applications, the admin API, even for an admin) are the person's own, at the
    site: 403 application_session."""
    account = new_account(stack, http, "oauth-powers")
    grant(stack, account.email)
    admin = login(stack, http, account.email)  # a session that holds the role
    code, verifier = fresh_code(http, admin, meta)
    redeemed = redeem(http, code, verifier).json()
    app = bearer(redeemed["access_token"])
    assert http.get(USERINFO, headers=app).status_code == 200
    films = httpx.get(f"{stack.films.url}/v1/me/favourites", headers=app)
    assert films.status_code == 200
    # Its tokens carry no roles, refreshed ones neither: no service's admin check passes.
    claims = jwt.decode(redeemed["access_token"], options={"verify_signature": False})
    assert claims["roles"] == []
    again = token_call(
        http, grant_type="refresh_token", refresh_token=redeemed["refresh_token"]
    ).json()
    assert jwt.decode(again["access_token"], options={"verify_signature": False})["roles"] == []
    film = {"title": "Not by an app", "year": 2001, "genres": [], "director": "x",
            "runtime_minutes": 90}  # fmt: skip
    posted = httpx.post(
        f"{stack.films.url}/v1/films", json=film, headers=bearer(again["access_token"])
    )
    assert posted.status_code == 403, posted.text
    body = {"client_id": "test-first-party", "redirect_uri": FIRST_PARTY_REDIRECT,
            "code_challenge": "c" * 43}  # fmt: skip
    for method, path, json in (
        ("GET", "/v1/auth/me", None),  # the address and roles, whatever its scopes
        ("GET", "/v1/auth/sessions", None),
        ("DELETE", "/v1/auth/sessions", None),
        ("POST", "/v1/auth/password/change",
         {"current_password": PASSWORD, "new_password": "another fine passphrase"}),
        ("POST", "/v1/auth/oauth/authorize", body),
        ("GET", "/v1/admin/users", None),
        ("POST", "/v1/auth/mfa/totp", {"password": PASSWORD}),
    ):  # fmt: skip
        r = http.request(method, path, json=json, headers=app)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "application_session"
    assert http.get("/v1/admin/users", headers=admin.bearer).status_code == 200  # the person


def test_a_code_dies_with_the_sign_in_that_allowed_it(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    account = new_account(stack, http, "oauth-logout")
    code, verifier = fresh_code(http, account, meta)
    out = http.post("/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert out.status_code == 204
    assert_oauth_error(redeem(http, code, verifier), 400, "invalid_grant")


def test_max_age_asks_for_a_recent_sign_in(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "oauth-max-age")
    asked = {"client_id": "test-spa", "redirect_uri": SPA_REDIRECT, "code_challenge": "c" * 43,
             "consented": True}  # fmt: skip
    stale = http.post(
        "/v1/auth/oauth/authorize", json=asked | {"max_age": 0}, headers=account.bearer
    )
    assert stale.status_code == 403 and stale.json()["error"] == "login_required", stale.text
    for max_age in (3600, 999_999_999):  # the web front end passes up to nine digits
        recent = http.post(
            "/v1/auth/oauth/authorize", json=asked | {"max_age": max_age}, headers=account.bearer
        )
        assert recent.status_code == 200, recent.text


def test_a_loopback_redirect_uri_may_use_any_port(http: httpx.Client) -> None:
    """RFC 8252 §7.3, for a native app's listener on an IP literal; not for a name."""

    def known(client_id: str, redirect_uri: str) -> int:
        pair = {"client_id": client_id, "redirect_uri": redirect_uri}
        return http.post("/v1/auth/oauth/client", json=pair).status_code

    assert known("test-spa", "http://127.0.0.1:54321/callback") == 200
    assert known("test-spa", "http://127.0.0.1/callback") == 200
    assert known("test-spa", "http://127.0.0.1:54321/other") == 400
    assert known("test-spa", "http://127.0.0.1:x/callback") == 400
    assert known("test-spa", "http://u@127.0.0.1:54321/callback") == 400
    assert known("test-spa", "https://127.0.0.1:54321/callback") == 400
    assert known("test-first-party", FIRST_PARTY_REDIRECT.replace(":9", ":10")) == 400


def test_two_redemptions_at_once_give_one_session(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """The code's row is locked while it is redeemed: of two requests racing with the same
    code and verifier, one gets tokens, the other invalid_grant, and the reuse ends the
    winner's session (it came with the verifier)."""
    account = new_account(stack, http, "oauth-race")
    code, verifier = fresh_code(http, account, meta)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: redeem(http, code, verifier), range(2)))
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]
    (won,) = [r for r in answers if r.status_code == 200]
    assert http.get(USERINFO, headers=bearer(won.json()["access_token"])).status_code == 401


def test_a_confidential_clients_refresh_tokens_are_its_own(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """RFC 6749 §6: it authenticates to refresh. Without its secret, or as another client,
    the token is refused and not spent; the JSON refresh, which names no client, refuses it
    too. A public client's refresh token needs no secret, but a client that names itself
    gets only its own."""
    account = new_account(stack, http, "oauth-refresh")
    with server() as client:
        token = signed_in(client, http, account, meta)
        held = token["refresh_token"]
        for form in (
            {},
            {"client_id": "test-spa"},
            {"client_id": "films-cli"},  # no application: ignored, as ever
        ):
            r = token_call(http, grant_type="refresh_token", refresh_token=held, **form)
            assert_oauth_error(r, 400, "invalid_grant")
        wrong = http.post(
            "/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": held},
            auth=("test-server", "wrong"),
        )
        assert_oauth_error(wrong, 401, "invalid_client")
        assert http.post("/v1/auth/token/refresh", json={"refresh_token": held}).status_code == 401
        refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=held)
        assert refreshed["refresh_token"] != held  # none of the refusals spent it

    spa_code, spa_verifier = fresh_code(http, account, meta)
    spa_token = redeem(http, spa_code, spa_verifier).json()["refresh_token"]
    as_server = http.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": spa_token},
        auth=("test-server", SERVER_SECRET),
    )
    assert_oauth_error(as_server, 400, "invalid_grant")
    assert http.post("/v1/auth/token/refresh", json={"refresh_token": spa_token}).is_success


def authorize(http: httpx.Client, account: Account, scope: str, **also: Any) -> httpx.Response:
    asked = {"client_id": "test-spa", "redirect_uri": SPA_WEB_REDIRECT,
             "code_challenge": "c" * 43}  # fmt: skip
    return http.post(
        "/v1/auth/oauth/authorize", json=asked | {"scope": scope} | also, headers=account.bearer
    )


def test_a_yes_is_remembered_until_the_person_takes_it_back(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """Auth, not the page, holds the yes: a code for an application that is not trusted
    needs the person's yes now (`consented`) or an earlier one covering the scopes. Taking
    it back ends the application's sessions, and it must ask again."""
    account = new_account(stack, http, "oauth-consent")
    refused = authorize(http, account, "openid")
    assert refused.status_code == 403 and refused.json()["error"] == "consent_required"
    assert http.get("/v1/auth/oauth/consents", headers=account.bearer).json() == {"items": []}

    assert authorize(http, account, "openid", consented=True).status_code == 200
    assert authorize(http, account, "openid").status_code == 200  # remembered
    # Not where the answer could reach another program on the device (RFC 8252 §8.6):
    # a public client's loopback redirect asks every time.
    loopback = authorize(http, account, "openid", redirect_uri=SPA_REDIRECT)
    assert loopback.status_code == 403 and loopback.json()["error"] == "consent_required"
    assert authorize(http, account, "").status_code == 200  # less than was allowed
    more = authorize(http, account, "openid films")
    assert more.status_code == 403 and more.json()["error"] == "consent_required"
    assert authorize(http, account, "email", consented=True).status_code == 200
    assert authorize(http, account, "openid email").status_code == 200  # the two yeses
    # A trusted application asks nobody, and is not listed.
    trusted = {"client_id": "test-first-party", "redirect_uri": FIRST_PARTY_REDIRECT,
               "code_challenge": "c" * 43}  # fmt: skip
    assert http.post("/v1/auth/oauth/authorize", json=trusted, headers=account.bearer).is_success
    (listed,) = http.get("/v1/auth/oauth/consents", headers=account.bearer).json()["items"]
    assert listed["client_id"] == "test-spa" and listed["name"] == "Film Diary"
    assert listed["scope"] == "openid email"

    # The application's session, and its tokens, end with the yes; so does a code it holds.
    code, verifier = fresh_code(http, account, meta)
    app = redeem(http, code, verifier).json()
    unspent, unspent_verifier = fresh_code(http, account, meta)
    app_bearer = bearer(app["access_token"])
    assert http.get("/v1/auth/oauth/consents", headers=app_bearer).status_code == 403
    assert http.delete("/v1/auth/oauth/consents/test-spa", headers=app_bearer).status_code == 403
    gone = http.delete("/v1/auth/oauth/consents/test-spa", headers=account.bearer)
    assert gone.status_code == 204, gone.text
    assert http.get(USERINFO, headers=app_bearer).status_code == 401
    refresh = token_call(http, grant_type="refresh_token", refresh_token=app["refresh_token"])
    assert_oauth_error(refresh, 400, "invalid_grant")
    assert http.get("/v1/auth/me", headers=account.bearer).is_success  # the person's own
    assert_oauth_error(redeem(http, unspent, unspent_verifier), 400, "invalid_grant")
    assert authorize(http, account, "openid").json()["error"] == "consent_required"
    again = http.delete("/v1/auth/oauth/consents/test-spa", headers=account.bearer)
    assert again.status_code == 404 and again.json()["error"] == "consent_not_found"
    odd = http.delete("/v1/auth/oauth/consents/a%20b", headers=account.bearer)
    assert odd.status_code == 422 and odd.json()["error"] == "invalid_request"
    with sqlite3.connect(stack.work / "auth.db") as db:
        events = [row[0] for row in db.execute(
            "SELECT event FROM audit_events WHERE user_id = ? ORDER BY id",
            (account.id.replace("-", ""),),
        )]  # fmt: skip
    assert "oauth_consent_revoked" in events


def test_max_age_comes_before_consent(stack: Stack, http: httpx.Client) -> None:
    """Sign in again first, then be asked: not the other way round."""
    account = new_account(stack, http, "oauth-order")
    stale = authorize(http, account, "openid", max_age=0)
    assert stale.json()["error"] == "login_required", stale.text


def test_an_applications_token_reaches_films_with_the_films_scope_only(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """Films takes an application's token for the `films` scope (RFC 6750 §3.1's
    insufficient_scope otherwise); the mailer, which names no scope, takes none."""
    account = new_account(stack, http, "oauth-films-scope")
    grant(stack, account.email, "admin")
    admin = login(stack, http, account.email)
    tokens = {}
    for scope in ("openid", "openid films"):
        verifier = generate_token(48)
        with spa(scope=scope) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], code_verifier=verifier
            )
        tokens[scope] = redeem(http, code_for_url(http, admin, url), verifier).json()
    films = f"{stack.films.url}/v1/films"
    for path in (films, f"{films}/1", f"{stack.films.url}/v1/me/favourites"):
        narrow = httpx.get(path, headers=bearer(tokens["openid"]["access_token"]))
        assert narrow.status_code == 403, (path, narrow.text)
        assert narrow.json()["error"] == "insufficient_scope"
        assert narrow.headers["www-authenticate"] == (
            'Bearer error="insufficient_scope", scope="films"'
        )
        wide = httpx.get(path, headers=bearer(tokens["openid films"]["access_token"]))
        assert wide.status_code == 200, (path, wide.text)
        assert httpx.get(path, headers=admin.bearer).status_code == 200  # the person's own
    deliveries = f"{stack.mailer.url}/v1/deliveries"
    mail = httpx.get(deliveries, params={"email": account.email},
                     headers=bearer(tokens["openid films"]["access_token"]))  # fmt: skip
    assert mail.status_code == 403 and mail.json()["error"] == "insufficient_scope", mail.text
    own = httpx.get(deliveries, params={"email": account.email}, headers=admin.bearer)
    assert own.status_code == 200, own.text


REVOKE = "/v1/auth/revoke"


def test_an_application_revokes_its_tokens(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """RFC 7009, as Authlib calls it: a refresh token or an access token ends its session
    (both tokens stop working); unknown tokens get the same 200; a malformed call is
    invalid_request."""
    assert meta["revocation_endpoint"] == f"{stack.auth.url}{REVOKE}"
    account = new_account(stack, http, "oauth-revoke")
    for kind in ("refresh_token", "access_token"):
        code, verifier = fresh_code(http, account, meta)
        held = redeem(http, code, verifier).json()
        assert http.get(USERINFO, headers=bearer(held["access_token"])).is_success
        with spa() as client:
            done = client.revoke_token(
                meta["revocation_endpoint"], token=held[kind], token_type_hint=kind
            )
        assert done.status_code == 200 and done.headers["cache-control"] == "no-store", kind
        assert http.get(USERINFO, headers=bearer(held["access_token"])).status_code == 401
        again = token_call(http, grant_type="refresh_token", refresh_token=held["refresh_token"])
        assert_oauth_error(again, 400, "invalid_grant")
        assert http.post(REVOKE, data={"token": held[kind]}).status_code == 200  # ended already
    for token in ("never-issued", "a.b.c", "x" * 8192):
        assert http.post(REVOKE, data={"token": token, "client_id": "test-spa"}).status_code == 200
    assert http.get("/v1/auth/me", headers=account.bearer).is_success  # the person's own
    assert_oauth_error(http.post(REVOKE, data={"client_id": "test-spa"}), 400, "invalid_request")
    assert_oauth_error(http.post(REVOKE, json={"token": "x"}), 400, "invalid_request")
    assert_oauth_error(http.post(REVOKE, data={"token": "x" * 8193}), 400, "invalid_request")
    twice = http.post(REVOKE, content=b"token=a&token=b",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert_oauth_error(twice, 400, "invalid_request")


def test_a_token_is_revoked_only_by_a_client_that_could_refresh_it(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """A confidential client's tokens by that client, with its secret; a person's own, or
    a public client's, by whoever holds them, but not by a client naming another. A
    refusal says so (RFC 7009 §2.1) and ends nothing; the JSON logout ends no
    confidential client's session."""
    account = new_account(stack, http, "oauth-revoke-who")
    with server() as client:
        token = signed_in(client, http, account, meta)
        held = {"token": token["refresh_token"]}
        for form, status, error in (
            ({}, 401, "invalid_client"),  # it must prove itself
            ({"client_id": "films-cli"}, 401, "invalid_client"),  # no application: nobody
            ({"client_id": "test-spa"}, 400, "unauthorized_client"),
        ):
            assert_oauth_error(http.post(REVOKE, data=held | form), status, error)
        wrong = http.post(REVOKE, data=held, auth=("test-server", "x"))
        assert_oauth_error(wrong, 401, "invalid_client")
        out = http.post("/v1/auth/logout", json={"refresh_token": token["refresh_token"]})
        assert out.status_code == 204
        assert http.get(USERINFO, headers=bearer(token["access_token"])).is_success  # still on
        done = client.revoke_token(meta["revocation_endpoint"], token=token["access_token"])
        assert done.status_code == 200
        assert http.get(USERINFO, headers=bearer(token["access_token"])).status_code == 401

    mine = {"token": account.refresh_token}
    theirs = http.post(REVOKE, data=mine | {"client_id": "test-spa"})
    assert_oauth_error(theirs, 400, "unauthorized_client")
    assert http.get("/v1/auth/me", headers=account.bearer).is_success  # not the app's to end
    assert http.post(REVOKE, data=mine).status_code == 200
    assert http.get("/v1/auth/me", headers=account.bearer).status_code == 401  # a logout


def test_a_logout_request_names_one_application_and_an_address_it_registered(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """OpenID Connect RP-Initiated Logout, auth's half (the page is the web front end's):
    an ID token hint we signed for one of our applications, expired or not; a client_id
    that agrees with it; a post-logout address that application registered."""
    assert meta["end_session_endpoint"].endswith("/oauth/logout")
    account = new_account(stack, http, "oauth-logout-request")
    with spa(scope="openid") as client:
        hint = signed_in(client, http, account, meta)["id_token"]
    claims = jwt.decode(hint, options={"verify_signature": False})

    def check(**asked: str) -> httpx.Response:
        return http.post("/v1/auth/oauth/logout-request", json=asked)

    answer = check(id_token_hint=hint, post_logout_redirect_uri=SPA_SIGNED_OUT)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "client_id": "test-spa",
        "name": "Film Diary",
        "post_logout_redirect_uri": SPA_SIGNED_OUT,
        "sub": account.id,
        "sid": claims["sid"],
        "issuer": TEST_ISSUER,
    }
    assert check(client_id="test-spa", post_logout_redirect_uri=SPA_SIGNED_OUT).is_success
    assert check().json()["client_id"] is None  # names nothing: the page just asks
    minter = Minter(stack.key_dir)
    old = minter.token(aud="test-spa", sub=account.id, iat=1, exp=2)  # long expired
    assert check(id_token_hint=old).json()["sub"] == account.id
    for refused in (
        {"id_token_hint": hint, "post_logout_redirect_uri": SPA_WEB_REDIRECT},  # a login URI
        {"id_token_hint": hint, "client_id": "test-server"},  # another application
        {"post_logout_redirect_uri": SPA_SIGNED_OUT},  # whose?
        {"client_id": "nobody"},
        {"id_token_hint": account.access_token},  # for the API, not an application
        {"id_token_hint": minter.token(aud="test-spa", iss="https://elsewhere")},
        {"id_token_hint": hint[:-4] + "AAAA"},  # not our signature
        {"id_token_hint": "not a token"},
    ):
        r = check(**refused)
        assert r.status_code == 400 and r.json()["error"] == "invalid_logout_request", refused
