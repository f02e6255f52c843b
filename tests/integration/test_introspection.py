"""Token introspection (RFC 7662) at auth, asked by Authlib as a resource server would ask:
whether a token is live now, which auth knows at once while films and the mailer learn of
an ended session only when its event reaches them. Its rate limits are
tests/integration/test_rate_limits.py's."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
from authlib.integrations.requests_client import OAuth2Session

from tests.accounts import PASSWORD, grant, login, new_account
from tests.conftest import Stack
from tests.integration.test_oauth import assert_oauth_error
from tests.integration.test_oauth_code import fresh_code, redeem, server, signed_in
from tests.support import RESOURCE_SECRET, SERVER_SECRET, TEST_AUDIENCE, TEST_ISSUER, Minter

INTROSPECT = "/v1/auth/introspect"


def asked(api: OAuth2Session, meta: dict[str, Any], token: str, **hint: str) -> dict[str, Any]:
    r = api.introspect_token(meta["introspection_endpoint"], token=token, **hint)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = r.json()
    return answer


def test_a_persons_access_token_is_active_until_its_session_ends(
    stack: Stack, http: httpx.Client, meta: dict[str, Any], service: OAuth2Session
) -> None:
    """The answer holds the token's own claims with the account's roles as they are now,
    and goes inactive at once when the session ends: no event, no expiry to wait for."""
    assert meta["introspection_endpoint"] == f"{stack.auth.url}{INTROSPECT}"
    assert meta["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ]
    account = new_account(stack, http, "introspect-person")
    answer = asked(service, meta, account.access_token, token_type_hint="access_token")
    claims = account.claims
    assert answer == {
        "active": True,
        "token_type": "Bearer",
        "sub": account.id,
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "jti": claims["jti"],
        "sid": account.sid,
        "roles": [],
        "amr": claims["amr"],
    }
    assert answer["exp"] > time.time()
    grant(stack, account.email)  # the token still says roles: []
    assert asked(service, meta, account.access_token)["roles"] == ["admin"]
    # A refresh token the person holds is no business of a resource server's.
    assert asked(service, meta, account.refresh_token) == {"active": False}

    r = http.post("/v1/auth/logout", json={"refresh_token": account.refresh_token})
    assert r.status_code == 204
    assert asked(service, meta, account.access_token) == {"active": False}


def test_an_applications_tokens_say_whose_they_are(
    stack: Stack, http: httpx.Client, meta: dict[str, Any], service: OAuth2Session
) -> None:
    """An application's access token names its client and scope; its refresh token is
    active to that client alone, and neither is once the application revokes them."""
    account = new_account(stack, http, "introspect-app")
    with server(scope="openid email") as app:
        token = signed_in(app, http, account, meta)
        answer = asked(service, meta, token["access_token"])
        assert answer["active"] is True
        assert answer["client_id"] == "test-server" and answer["scope"] == "openid email"
        assert answer["sub"] == account.id and answer["roles"] == []

        own = asked(app, meta, token["refresh_token"], token_type_hint="refresh_token")
        assert own.pop("exp") - own.pop("iat") == 14 * 24 * 3600  # the stack's refresh TTL
        assert own == {
            "active": True,
            "client_id": "test-server",
            "scope": "openid email",
            "sub": account.id,
            "iss": TEST_ISSUER,
            "sid": answer["sid"],
        }
        assert asked(service, meta, token["refresh_token"]) == {"active": False}

        # Rotated: the old refresh token is no longer its holder's.
        refreshed = app.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
        assert asked(app, meta, token["refresh_token"]) == {"active": False}
        assert asked(app, meta, refreshed["refresh_token"])["active"] is True

        done = app.revoke_token(meta["revocation_endpoint"], token=refreshed["refresh_token"])
        assert done.status_code == 200
        for held in (refreshed["access_token"], refreshed["refresh_token"]):
            assert asked(app, meta, held) == {"active": False}
            assert asked(service, meta, held) == {"active": False}


def test_only_a_confidential_client_with_its_secret_may_ask(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """RFC 7662 §2.1: the endpoint is closed to anyone who does not prove themselves, so it
    cannot be used to scan for tokens. A public client cannot prove itself."""
    account = new_account(stack, http, "introspect-who")
    held = {"token": account.access_token}
    basic = [("test-api", "wrong"), ("test-server", RESOURCE_SECRET), ("test-spa", "")]
    refusals = [http.post(INTROSPECT, data=held, auth=pair) for pair in basic]
    for form in (
        {},
        {"client_id": "test-spa"},  # public: no secret to prove it
        {"client_id": "test-api"},
        {"client_id": "test-api", "client_secret": "wrong"},
        {"client_id": "nobody", "client_secret": RESOURCE_SECRET},
    ):
        refusals.append(http.post(INTROSPECT, data=held | form))
    for r in refusals:
        assert_oauth_error(r, 401, "invalid_client")
        assert "active" not in r.json()
    assert refusals[2].headers["www-authenticate"] == 'Basic realm="token"'  # public, Basic
    # A client that proves itself but is not registered to introspect learns nothing of
    # access tokens (RFC 7662 §4).
    posted = http.post(
        INTROSPECT, data=held | {"client_id": "test-server", "client_secret": SERVER_SECRET}
    )
    assert posted.status_code == 200 and posted.json() == {"active": False}
    as_api = http.post(
        INTROSPECT, data=held | {"client_id": "test-api", "client_secret": RESOURCE_SECRET}
    )
    assert as_api.status_code == 200 and as_api.json()["active"] is True


def test_whatever_is_not_a_live_token_is_inactive(
    stack: Stack, http: httpx.Client, meta: dict[str, Any], service: OAuth2Session
) -> None:
    """Unknown, malformed and foreign tokens alike; an ID token is not an access token;
    a disabled account's tokens are inactive at once. A malformed call is invalid_request."""
    account = new_account(stack, http, "introspect-dead")
    code, verifier = fresh_code(http, account, meta)
    id_token = redeem(http, code, verifier).json()["id_token"]
    forged = account.access_token[:-4] + ("AAAA" if account.access_token[-4:] != "AAAA" else "BBBB")
    # Signed with the real key for the account's live session, each wrong in one way.
    minter = Minter(stack.key_dir)
    sub, sid = account.id, account.sid
    just_expired = minter.token(sub=sub, sid=sid, exp=int(time.time()) - 2)  # within the leeway
    assert asked(service, meta, minter.token(sub=sub, sid=sid))["active"] is True  # the control
    for token in (
        "never-issued",
        "a.b.c",
        "x" * 8192,
        id_token,
        forged,
        just_expired,
        minter.token(sub=sub, sid=sid, aud="another-api"),
        minter.token(sub=sub, sid=sid, iss="https://elsewhere.example"),
        minter.token(headers={"kid": "retired-long-ago"}, sub=sub, sid=sid),
    ):
        assert asked(service, meta, token) == {"active": False}

    # A client's own token: active while that client may have one, with those scopes.
    own = minter.token(sub="test-api", client_id="test-api", scope="films")
    assert asked(service, meta, own)["active"] is True  # the control
    for token in (
        minter.token(sub="test-server", client_id="test-server", scope="films"),  # not for it
        minter.token(sub="gone-api", client_id="gone-api", scope="films"),  # removed
        minter.token(sub="test-api", client_id="test-api", scope="films openid"),
    ):
        assert asked(service, meta, token) == {"active": False}

    victim = login(stack, http, account.email, PASSWORD)
    assert asked(service, meta, victim.refresh_token) == {"active": False}  # not its
    assert asked(service, meta, victim.access_token)["active"] is True
    with sqlite3.connect(stack.work / "auth.db") as db:  # disabled, its sessions left alone
        db.execute("UPDATE users SET disabled_at = '2026-01-01 00:00:00.000000' WHERE email = ?",
                   (account.email,))  # fmt: skip
    try:
        assert asked(service, meta, victim.access_token) == {"active": False}
    finally:
        with sqlite3.connect(stack.work / "auth.db") as db:
            db.execute("UPDATE users SET disabled_at = NULL WHERE email = ?", (account.email,))
    assert asked(service, meta, victim.access_token)["active"] is True

    basic = ("test-api", RESOURCE_SECRET)
    assert_oauth_error(http.post(INTROSPECT, data={}, auth=basic), 400, "invalid_request")
    too_long = http.post(INTROSPECT, data={"token": "x" * 8193}, auth=basic)
    assert_oauth_error(too_long, 400, "invalid_request")
    twice = http.post(INTROSPECT, content=b"token=a&token=b", auth=basic,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert_oauth_error(twice, 400, "invalid_request")
    as_json = http.post(INTROSPECT, json={"token": "x"}, auth=basic)
    assert_oauth_error(as_json, 400, "invalid_request")


def test_a_service_signs_nobody_in(http: httpx.Client, stack: Stack) -> None:
    """A client without redirect URIs gets no code."""
    account = new_account(stack, http, "introspect-no-sign-in")
    r = http.post(
        "/v1/auth/oauth/authorize",
        json={
            "client_id": "test-api",
            "redirect_uri": "https://reviews.example.test/cb",
            "code_challenge": "c" * 43,
            "consented": True,
        },
        headers=account.bearer,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_client"
