"""DPoP (RFC 9449) over real HTTP: auth's token endpoint binds tokens to the key of a
client's proof, and films and auth, as resources, take a bound token only with a fresh
proof by that key. The client's side is tests/dpop_keys.py; the proofs' own rules are
tests/unit/test_dpop.py's."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token

from auth_service.oauth import s256
from tests.accounts import PASSWORD, Account, code_for, cooled_down_account, new_account
from tests.conftest import Stack
from tests.dpop_keys import ProofKey
from tests.integration.test_oauth import assert_oauth_error
from tests.integration.test_oauth_code import code_for_url, fresh_code, redeem, server
from tests.integration.test_passkeys import login_options, with_passkey
from tests.integration.test_pushed_requests import BASIC, authorize, request_for
from tests.integration.test_two_step import mfa_token, turn_on
from tests.passkey_device import Device
from tests.support import (
    BOUND_SECRET,
    PUSHED_REDIRECT,
    RESOURCE_SECRET,
    SERVER_REDIRECT,
    SERVER_SECRET,
    SPA_REDIRECT,
    unique_email,
)


def token_url(stack: Stack) -> str:
    return f"{stack.auth.url}/v1/auth/token"


def with_proof(
    http: httpx.Client, stack: Stack, key: ProofKey | None, form: dict[str, str], **kw: Any
) -> httpx.Response:
    """A token request, with a proof by `key` (None: without one)."""
    headers = {"DPoP": key.proof("POST", token_url(stack))} if key else {}
    return http.post("/v1/auth/token", data=form, headers=headers, **kw)


def password_grant(
    http: httpx.Client, stack: Stack, key: ProofKey, account: Account
) -> dict[str, Any]:
    form = {"grant_type": "password", "username": account.email, "password": PASSWORD}
    r = with_proof(http, stack, key, form)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["token_type"] == "DPoP"
    return body


def cnf(access_token: str) -> Any:
    return jwt.decode(access_token, options={"verify_signature": False}).get("cnf")


def refreshes_with_its_key_alone(
    http: httpx.Client, stack: Stack, key: ProofKey, refresh_token: str
) -> dict[str, Any]:
    """A bound refresh token is refused (not spent) without a proof, or with another
    key's; with its key's it rotates, bound still: the new pair."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    for sender in (None, ProofKey()):
        r = with_proof(http, stack, sender, form)
        assert_oauth_error(r, 400, "invalid_grant")
        assert "DPoP" in r.json()["error_description"]
    r = with_proof(http, stack, key, form)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["token_type"] == "DPoP" and cnf(body["access_token"]) == {"jkt": key.jkt}
    return body


def a_film(stack: Stack, key: ProofKey, token: str) -> str:
    url = f"{stack.films.url}/v1/films"
    r = httpx.get(url, params={"limit": 1}, headers=key.authorization("GET", url, token))
    assert r.status_code == 200, r.text
    return str(r.json()["items"][0]["id"])


def test_a_bound_token_reaches_films_and_auth_with_its_keys_proofs_alone(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    assert "ES256" in meta["dpop_signing_alg_values_supported"]
    key, thief = ProofKey(), ProofKey()
    account = new_account(stack, http, "dpop")
    token = password_grant(http, stack, key, account)["access_token"]
    assert cnf(token) == {"jkt": key.jkt}
    url = f"{stack.films.url}/v1/films/{a_film(stack, key, token)}"
    me = f"{stack.auth.url}/v1/auth/me"
    assert httpx.get(url, headers=key.authorization("GET", url, token)).status_code == 200
    assert httpx.get(me, headers=key.authorization("GET", me, token)).json()["email"] == (
        account.email
    )

    def refused(headers: dict[str, str], error: str, where: str = url) -> None:
        r = httpx.get(where, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == error
        assert r.headers["www-authenticate"].startswith(f'DPoP error="{error}"')

    for where in (url, me):
        # Copied, it is worth nothing: as Bearer, or as DPoP with the thief's own proof.
        r = httpx.get(where, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        refused(thief.authorization("GET", where, token), "invalid_dpop_proof", where)
        refused({"Authorization": f"DPoP {token}"}, "invalid_dpop_proof", where)
    good = key.authorization("GET", url, token)
    assert httpx.get(url, headers=good).status_code == 200
    refused(good, "invalid_dpop_proof")  # the same proof again
    for proof in (
        key.proof("GET", url + "0", token),  # another film's
        key.proof("DELETE", url, token),
        key.proof("GET", url, token + "x"),
        key.proof("GET", url),  # for no token
    ):
        refused({"Authorization": f"DPoP {token}", "DPoP": proof}, "invalid_dpop_proof")
    two = [("DPoP", key.proof("GET", url, token)), ("DPoP", key.proof("GET", url, token))]
    r = httpx.get(url, headers=[("Authorization", f"DPoP {token}"), *two])
    assert r.status_code == 401 and r.json()["error"] == "invalid_dpop_proof"
    assert httpx.get(url, headers=key.authorization("GET", url, token)).status_code == 200


def test_an_unbound_token_is_no_dpop_token(stack: Stack, http: httpx.Client) -> None:
    """A Bearer token stays a Bearer token: sent as DPoP, even with a good proof, it is
    refused, so no token changes kind on the way."""
    key = ProofKey()
    account = new_account(stack, http, "dpop-plain")
    url = f"{stack.films.url}/v1/films"
    assert httpx.get(url, headers=account.bearer).status_code == 200
    r = httpx.get(url, headers=key.authorization("GET", url, account.access_token))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


def test_a_public_clients_refresh_token_is_bound_to_its_key(
    stack: Stack, http: httpx.Client
) -> None:
    """Without a proof, or with another key's, the refresh token is refused, not spent,
    and its session goes on; with the key's, it rotates, bound still."""
    key = ProofKey()
    account = new_account(stack, http, "dpop-refresh")
    held = password_grant(http, stack, key, account)["refresh_token"]
    json_refresh = http.post("/v1/auth/token/refresh", json={"refresh_token": held})
    assert json_refresh.status_code == 401 and json_refresh.json()["error"] == "invalid_grant"
    rotated = refreshes_with_its_key_alone(http, stack, key, held)
    refreshes_with_its_key_alone(http, stack, key, rotated["refresh_token"])


def test_a_bad_proof_at_the_token_endpoint_is_invalid_dpop_proof(
    stack: Stack, http: httpx.Client
) -> None:
    key = ProofKey()
    account = new_account(stack, http, "dpop-bad")
    form = {"grant_type": "password", "username": account.email, "password": PASSWORD}
    for proof in (
        key.proof("POST", f"{stack.auth.url}/v1/auth/revoke"),
        key.proof("GET", token_url(stack)),
        key.proof("POST", token_url(stack), iat=1),
        "not a proof",
    ):
        r = http.post("/v1/auth/token", data=form, headers={"DPoP": proof})
        assert_oauth_error(r, 400, "invalid_dpop_proof")
    proof = key.proof("POST", token_url(stack))
    assert http.post("/v1/auth/token", data=form, headers={"DPoP": proof}).status_code == 200
    replayed = http.post("/v1/auth/token", data=form, headers={"DPoP": proof})
    assert_oauth_error(replayed, 400, "invalid_dpop_proof")
    # Without a proof the grant is what it always was: a Bearer token.
    plain = http.post("/v1/auth/token", data=form)
    assert plain.json()["token_type"] == "Bearer" and cnf(plain.json()["access_token"]) is None


def test_a_public_applications_code_opens_a_bound_session(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    key = ProofKey()
    account = new_account(stack, http, "dpop-spa")
    code, verifier = fresh_code(http, account, meta)
    r = redeem(http, code, verifier)  # no proof: as before
    assert r.json()["token_type"] == "Bearer"
    code, verifier = fresh_code(http, account, meta)
    proved = http.post(
        "/v1/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_REDIRECT,
            "code_verifier": verifier,
            "client_id": "test-spa",
        },
        headers={"DPoP": key.proof("POST", token_url(stack))},
    )
    assert proved.status_code == 200, proved.text
    token = proved.json()
    assert token["token_type"] == "DPoP" and cnf(token["access_token"]) == {"jkt": key.jkt}
    refreshes_with_its_key_alone(http, stack, key, token["refresh_token"])


def test_a_confidential_clients_refresh_token_stays_its_own_not_its_keys(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    """RFC 9449 §5: a confidential client's refresh tokens are bound by its secret, so it
    may refresh with a new key, or none; each access token is bound to the proof of its
    own request."""
    first, second = ProofKey(), ProofKey()
    account = new_account(stack, http, "dpop-server")
    verifier = generate_token(48)
    with server(scope="openid email") as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier
        )
    code = code_for_url(http, account, url)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": SERVER_REDIRECT,
        "code_verifier": verifier,
    }
    basic = ("test-server", SERVER_SECRET)
    token = with_proof(http, stack, first, form, auth=basic).json()
    assert token["token_type"] == "DPoP" and cnf(token["access_token"]) == {"jkt": first.jkt}
    refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    rotated = with_proof(http, stack, second, refresh, auth=basic).json()
    assert cnf(rotated["access_token"]) == {"jkt": second.jkt}
    refresh["refresh_token"] = rotated["refresh_token"]
    plain = with_proof(http, stack, None, refresh, auth=basic).json()
    assert plain["token_type"] == "Bearer" and cnf(plain["access_token"]) is None


def test_a_client_registered_for_bound_tokens_gets_none_without_a_proof(
    stack: Stack, http: httpx.Client
) -> None:
    key = ProofKey("EdDSA")
    form = {"grant_type": "client_credentials", "scope": "films"}
    basic = ("test-bound", BOUND_SECRET)
    assert_oauth_error(with_proof(http, stack, None, form, auth=basic), 400, "invalid_dpop_proof")
    r = with_proof(http, stack, key, form, auth=basic)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert r.json()["token_type"] == "DPoP" and cnf(token) == {"jkt": key.jkt}
    url = f"{stack.films.url}/v1/films"
    assert httpx.get(url, headers=key.authorization("GET", url, token)).status_code == 200
    # Introspection tells a resource server what the token is bound to (RFC 9449 §6.2).
    r = http.post("/v1/auth/introspect", data={"token": token}, auth=("test-api", RESOURCE_SECRET))
    assert r.json()["active"] is True
    assert r.json()["token_type"] == "DPoP" and r.json()["cnf"] == {"jkt": key.jkt}


def test_an_address_change_keeps_the_sessions_key(stack: Stack, http: httpx.Client) -> None:
    """The pair auth gives again after a move is bound as the session was."""
    key = ProofKey()
    account = cooled_down_account(stack, http, "dpop-move")
    access = password_grant(http, stack, key, account)["access_token"]
    new_email = unique_email("dpop-moved")
    ask = f"{stack.auth.url}/v1/auth/email/change"
    r = httpx.post(
        ask,
        json={"new_email": new_email, "password": PASSWORD},
        headers=key.authorization("POST", ask, access),
    )
    assert r.status_code == 202, r.text
    confirm = f"{stack.auth.url}/v1/auth/email/change/confirm"
    pair = httpx.post(
        confirm,
        json={"code": code_for(stack, new_email)},
        headers=key.authorization("POST", confirm, access),
    )
    assert pair.status_code == 200, pair.text
    assert pair.json()["token_type"] == "DPoP"
    assert cnf(pair.json()["access_token"]) == {"jkt": key.jkt}
    refreshes_with_its_key_alone(http, stack, key, pair.json()["refresh_token"])


def test_a_session_begun_without_a_key_is_bound_by_its_first_proof(
    stack: Stack, http: httpx.Client
) -> None:
    """RFC 9449 §5: a public client's refresh token is bound once it shows a key."""
    key = ProofKey()
    account = new_account(stack, http, "dpop-late")  # a Bearer session
    r = with_proof(
        http, stack, key, {"grant_type": "refresh_token", "refresh_token": account.refresh_token}
    )
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
    refreshes_with_its_key_alone(http, stack, key, r.json()["refresh_token"])


# -- authorization codes bound to a key (RFC 9449 §10) ---------------------------------


def pushed_with_proof(
    http: httpx.Client, stack: Stack, key: ProofKey, verifier: str, **extra: str
) -> httpx.Response:
    """test-pushed's request, pushed with a DPoP proof by `key`."""
    proof = key.proof("POST", f"{stack.auth.url}/v1/auth/par")
    return http.post(
        "/v1/auth/par", data=request_for(verifier, **extra), auth=BASIC, headers={"DPoP": proof}
    )


def ticket_desk_redeems(
    http: httpx.Client, stack: Stack, key: ProofKey | None, code: str, verifier: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": PUSHED_REDIRECT,
        "code_verifier": verifier,
    }
    return with_proof(http, stack, key, form, auth=BASIC)


def test_a_code_pushed_with_a_proof_is_redeemed_with_that_keys_alone(
    stack: Stack, http: httpx.Client
) -> None:
    """§10.1: a proof at the pushed request endpoint binds the code as dpop_jkt would; a
    redemption without one, or with another key's, is refused and spends nothing."""
    key = ProofKey()
    account = new_account(stack, http, "dpop-par")
    verifier = generate_token(48)
    r = pushed_with_proof(http, stack, key, verifier)
    assert r.status_code == 201, r.text
    code = authorize(http, account, "test-pushed", r.json()["request_uri"]).json()["code"]
    for sender in (None, ProofKey()):
        refused = ticket_desk_redeems(http, stack, sender, code, verifier)
        assert_oauth_error(refused, 400, "invalid_grant")
        assert "bound to a key" in refused.json()["error_description"]
    redeemed = ticket_desk_redeems(http, stack, key, code, verifier)
    assert redeemed.status_code == 200, redeemed.text
    assert cnf(redeemed.json()["access_token"]) == {"jkt": key.jkt}
    # Redeemed again with the verifier: without the key, that ends nothing; with it, the
    # session the first redemption opened ends, as for any code redeemed twice.
    refresh = {"grant_type": "refresh_token", "refresh_token": redeemed.json()["refresh_token"]}
    assert_oauth_error(ticket_desk_redeems(http, stack, None, code, verifier), 400, "invalid_grant")
    refreshed = with_proof(http, stack, key, refresh, auth=BASIC)
    assert refreshed.status_code == 200, refreshed.text
    assert_oauth_error(ticket_desk_redeems(http, stack, key, code, verifier), 400, "invalid_grant")
    refresh["refresh_token"] = refreshed.json()["refresh_token"]
    assert_oauth_error(with_proof(http, stack, key, refresh, auth=BASIC), 400, "invalid_grant")


def test_dpop_jkt_binds_a_code_and_must_name_the_proofs_key(
    stack: Stack, http: httpx.Client
) -> None:
    key, other = ProofKey(), ProofKey()
    account = new_account(stack, http, "dpop-jkt")
    # Pushed with dpop_jkt alone, or with a proof by the same key: bound.
    for sent in (
        http.post(
            "/v1/auth/par", data=request_for(generate_token(48), dpop_jkt=key.jkt), auth=BASIC
        ),
        pushed_with_proof(http, stack, key, generate_token(48), dpop_jkt=key.jkt),
    ):
        assert sent.status_code == 201, sent.text
    verifier = generate_token(48)
    form = request_for(verifier, dpop_jkt=key.jkt)
    request_uri = http.post("/v1/auth/par", data=form, auth=BASIC).json()["request_uri"]
    code = authorize(http, account, "test-pushed", request_uri).json()["code"]
    assert_oauth_error(ticket_desk_redeems(http, stack, None, code, verifier), 400, "invalid_grant")
    assert ticket_desk_redeems(http, stack, key, code, verifier).status_code == 200
    # Another key's proof beside it, or no thumbprint at all: refused when pushed.
    mismatched = pushed_with_proof(http, stack, other, generate_token(48), dpop_jkt=key.jkt)
    assert_oauth_error(mismatched, 400, "invalid_dpop_proof")
    malformed = request_for(generate_token(48), dpop_jkt="not-a-thumbprint")
    assert_oauth_error(
        http.post("/v1/auth/par", data=malformed, auth=BASIC), 400, "invalid_request"
    )


def test_a_code_asked_for_in_the_address_with_dpop_jkt_is_bound(
    stack: Stack, http: httpx.Client
) -> None:
    """What the web front end passes on from the authorization URL (its page:
    tests/web/test_oauth_pages.py)."""
    key = ProofKey()
    account = new_account(stack, http, "dpop-jkt-address")
    verifier = generate_token(48)
    asked = {
        "client_id": "test-spa",
        "redirect_uri": SPA_REDIRECT,
        "code_challenge": s256(verifier),
        "consented": True,
    }
    r = http.post(
        "/v1/auth/oauth/authorize", json=asked | {"dpop_jkt": "short"}, headers=account.bearer
    )
    assert r.status_code == 422
    r = http.post(
        "/v1/auth/oauth/authorize", json=asked | {"dpop_jkt": key.jkt}, headers=account.bearer
    )
    assert r.status_code == 200, r.text
    code = r.json()["code"]
    assert_oauth_error(redeem(http, code, verifier), 400, "invalid_grant")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": SPA_REDIRECT,
        "code_verifier": verifier,
        "client_id": "test-spa",
    }
    assert with_proof(http, stack, key, form).json()["token_type"] == "DPoP"


def proof_for(stack: Stack, key: ProofKey, path: str) -> dict[str, str]:
    """A proof for a JSON POST to auth's `path`."""
    return {"DPoP": key.proof("POST", f"{stack.auth.url}{path}")}


def bound_pair(r: httpx.Response, key: ProofKey) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["token_type"] == "DPoP" and cnf(body["access_token"]) == {"jkt": key.jkt}
    return body


def test_the_json_sign_ins_bind_tokens_to_the_proofs_key(stack: Stack, http: httpx.Client) -> None:
    """A first-party app on the JSON API (a phone's, a single page's) sends a proof with
    each request that gets tokens, as at the token endpoint: the verification's, the
    password's and the refresh's are bound to its key, and its session too."""
    key = ProofKey()
    email = unique_email("dpop-json")
    http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    verification = {"email": email, "code": code_for(stack, email)}
    verify = "/v1/auth/verify"
    verified = bound_pair(
        http.post(verify, json=verification, headers=proof_for(stack, key, verify)), key
    )
    refresh = "/v1/auth/token/refresh"
    held = {"refresh_token": verified["refresh_token"]}
    for headers in ({}, proof_for(stack, ProofKey(), refresh)):  # not spent by these
        r = http.post(refresh, json=held, headers=headers)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_grant")
    rotated = bound_pair(http.post(refresh, json=held, headers=proof_for(stack, key, refresh)), key)
    a_film(stack, key, rotated["access_token"])

    login, body = "/v1/auth/login", {"email": email, "password": PASSWORD}
    proof = proof_for(stack, key, login)
    bound_pair(http.post(login, json=body, headers=proof), key)
    for headers in (proof, proof_for(stack, key, verify), {"DPoP": "not a proof"}):
        r = http.post(login, json=body, headers=headers)  # replayed, another URL's, none
        assert (r.status_code, r.json()["error"]) == (400, "invalid_dpop_proof"), r.text
    plain = http.post(login, json=body)
    assert plain.json()["token_type"] == "Bearer" and cnf(plain.json()["access_token"]) is None


def test_a_code_a_passkey_and_the_second_step_bind_too(stack: Stack, http: httpx.Client) -> None:
    key = ProofKey()
    account = cooled_down_account(stack, http, "dpop-steps")
    assert http.post("/v1/auth/login/code", json={"email": account.email}).status_code == 202
    by_code = {"email": account.email, "code": code_for(stack, account.email, count=2)}
    path = "/v1/auth/login/code/verify"
    bound_pair(http.post(path, json=by_code, headers=proof_for(stack, key, path)), key)

    device = Device()
    with_passkey(http, account, device)
    answer = {"credential": device.get(login_options(http))}
    path = "/v1/auth/login/passkey"
    bound_pair(http.post(path, json=answer, headers=proof_for(stack, key, path)), key)

    app, _ = turn_on(http, account)
    second = {"mfa_token": mfa_token(http, account), "code": app.code()}
    path = "/v1/auth/login/mfa"
    pair = bound_pair(http.post(path, json=second, headers=proof_for(stack, key, path)), key)
    assert "mfa" in jwt.decode(pair["access_token"], options={"verify_signature": False})["amr"]
