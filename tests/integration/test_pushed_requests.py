"""Pushed authorization requests (RFC 9126): an application sends its authorization
request to `POST /v1/auth/par` first, proving itself as at the token endpoint, and the
browser with the `request_uri` it gets back. Here the web front end's part is played by
hand (its calls to auth as a signed-in person); the pages themselves are
tests/web/test_oauth_pages.py's. The stack's `test-pushed` must push; `test-spa` (public)
and `test-signed` (private_key_jwt) may."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from auth_service.oauth import s256
from tests.accounts import Account, login, new_account
from tests.conftest import Stack
from tests.integration.test_oauth import assert_oauth_error
from tests.integration.test_private_key_jwt import assertion, with_assertion
from tests.support import PUSHED_REDIRECT, PUSHED_SECRET, SIGNED_REDIRECT, SPA_REDIRECT

PAR = "/v1/auth/par"
PREFIX = "urn:ietf:params:oauth:request_uri:"
BASIC = ("test-pushed", PUSHED_SECRET)


def request_for(verifier: str, **extra: str) -> dict[str, str]:
    """test-pushed's authorization request."""
    return {
        "response_type": "code",
        "client_id": "test-pushed",
        "redirect_uri": PUSHED_REDIRECT,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "scope": "openid email",
        "state": "st-" + generate_token(8),
        "nonce": "n-" + generate_token(8),
    } | extra


def push(http: httpx.Client, form: dict[str, str], auth: Any = BASIC) -> str:
    r = http.post(PAR, data=form, auth=auth)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["expires_in"] == 600 and set(body) == {"request_uri", "expires_in"}
    request_uri: str = body["request_uri"]
    assert request_uri.startswith(PREFIX) and len(request_uri) > len(PREFIX) + 40
    return request_uri


def ticket_desk() -> OAuth2Session:
    """test-pushed as Authlib's client, for the token endpoint."""
    return OAuth2Session(
        client_id="test-pushed",
        client_secret=PUSHED_SECRET,
        redirect_uri=PUSHED_REDIRECT,
        token_endpoint_auth_method="client_secret_basic",
    )


def authorize(
    http: httpx.Client, account: Account, client_id: str, request_uri: str
) -> httpx.Response:
    """What the web front end asks once the person allowed the application."""
    asked = {"client_id": client_id, "request_uri": request_uri, "consented": True}
    return http.post("/v1/auth/oauth/authorize", json=asked, headers=account.bearer)


def test_a_pushed_request_gives_one_code_for_what_it_holds(
    stack: Stack, http: httpx.Client, meta: dict[str, Any]
) -> None:
    assert meta["pushed_authorization_request_endpoint"].endswith(PAR)
    assert meta["require_pushed_authorization_requests"] is False  # only test-pushed must
    account = new_account(stack, http, "par")
    verifier = generate_token(48)
    asked = request_for(verifier, login_hint=account.email, max_age="3600")
    request_uri = push(http, asked)

    # The page reads back what it needs (the browser's address held the request_uri
    # alone), not the nonce or the challenge: whoever holds the request_uri may ask.
    r = http.post(
        "/v1/auth/oauth/client", json={"client_id": "test-pushed", "request_uri": request_uri}
    )
    assert r.status_code == 200, r.text
    found = r.json()
    assert found["name"] == "Ticket Desk" and found["require_pushed_authorization_requests"]
    shown = ("client_id", "redirect_uri", "scope", "state", "login_hint", "max_age")
    assert found["request"] == {name: asked[name] for name in shown}

    r = authorize(http, account, "test-pushed", request_uri)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "openid email"
    code = r.json()["code"]
    with ticket_desk() as client:
        token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier)
    claims = jwt.decode(token["id_token"], options={"verify_signature": False})
    assert claims["nonce"] == asked["nonce"] and claims["aud"] == "test-pushed"
    assert claims["email"] == account.email

    # One code per request: the request_uri is spent, for the page too.
    assert_problem(authorize(http, account, "test-pushed", request_uri), 400, "invalid_request_uri")
    r = http.post(
        "/v1/auth/oauth/client", json={"client_id": "test-pushed", "request_uri": request_uri}
    )
    assert_problem(r, 400, "invalid_request_uri")


def test_a_pushed_prompt_login_wants_a_sign_in_made_after_the_push(
    stack: Stack, http: httpx.Client
) -> None:
    """Auth checks it, by its own clock, whatever the page does (a consent form posted
    straight away, say); and a sign-in made after the push meets a pushed max_age, even
    0 (which any sign-in is older than by the time of the yes)."""
    account = new_account(stack, http, "par-fresh")  # signed in before the pushes
    for extra in ({"prompt": "login"}, {"max_age": "0"}, {"prompt": "login", "max_age": "0"}):
        request_uri = push(http, request_for(generate_token(48), **extra))
        assert_problem(authorize(http, account, "test-pushed", request_uri), 403, "login_required")
        again = login(stack, http, account.email)  # the sign-in the page sends them to
        r = authorize(http, again, "test-pushed", request_uri)
        assert r.status_code == 200, (extra, r.text)
        account = again
    # A sign-in from before the push still meets a max_age it is younger than.
    request_uri = push(http, request_for(generate_token(48), max_age="3600"))
    assert authorize(http, account, "test-pushed", request_uri).status_code == 200


def assert_problem(r: httpx.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == error, r.text


def test_a_client_that_pushes_gets_no_code_for_a_request_in_the_address(
    stack: Stack, http: httpx.Client
) -> None:
    account = new_account(stack, http, "par-only")
    asked = request_for(generate_token(48))
    plain = {name: asked[name] for name in ("client_id", "redirect_uri", "code_challenge")}
    r = http.post(
        "/v1/auth/oauth/authorize", json=plain | {"consented": True}, headers=account.bearer
    )
    assert_problem(r, 400, "invalid_request")
    r = http.post(
        "/v1/auth/oauth/client", json={"client_id": "test-pushed", "redirect_uri": PUSHED_REDIRECT}
    )
    assert r.status_code == 200 and r.json()["require_pushed_authorization_requests"] is True
    assert r.json()["request"] is None


def test_a_request_uri_is_its_clients_alone_and_expires(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "par-other")
    request_uri = push(http, request_for(generate_token(48)))
    for client_id in ("test-spa", "test-server"):
        assert_problem(authorize(http, account, client_id, request_uri), 400, "invalid_request_uri")
    # Nor is anything else in the request taken beside it: the pushed request holds it.
    r = http.post(
        "/v1/auth/oauth/authorize",
        json={"client_id": "test-pushed", "request_uri": request_uri, "scope": "films"},
        headers=account.bearer,
    )
    assert r.status_code == 422, r.text
    made_up = PREFIX + generate_token(43)
    assert_problem(authorize(http, account, "test-pushed", made_up), 400, "invalid_request_uri")

    with sqlite3.connect(stack.work / "auth.db") as db:
        db.execute("UPDATE pushed_requests SET expires_at = '2020-01-01 00:00:00.000000'")
    assert_problem(authorize(http, account, "test-pushed", request_uri), 400, "invalid_request_uri")


def test_two_tabs_with_one_request_uri_get_one_code(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "par-race")
    request_uri = push(http, request_for(generate_token(48)))

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.auth.url) as tab:
            return authorize(tab, account, "test-pushed", request_uri)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(4)))
    assert sorted(r.status_code for r in answers) == [200, 400, 400, 400], [r.text for r in answers]


def test_a_public_client_and_a_signing_one_push_too(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "par-public")
    verifier = generate_token(48)
    spa = request_for(verifier, client_id="test-spa", redirect_uri=SPA_REDIRECT)
    request_uri = push(http, spa, auth=None)  # a public client names itself
    assert authorize(http, account, "test-spa", request_uri).status_code == 200

    signed = request_for(verifier, client_id="test-signed", redirect_uri=SIGNED_REDIRECT)
    proof = assertion()
    push(http, with_assertion(proof, **signed), auth=None)
    # Each assertion once, here as at the token endpoint.
    r = http.post(PAR, data=with_assertion(proof, **signed))
    assert_oauth_error(r, 401, "invalid_client")


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"response_type": "token"}, 400, "unsupported_response_type"),
        ({"response_type": None}, 400, "unsupported_response_type"),
        ({"redirect_uri": "https://evil.example.test/callback"}, 400, "invalid_request"),
        ({"redirect_uri": None}, 400, "invalid_request"),
        ({"code_challenge": None}, 400, "invalid_request"),
        ({"code_challenge_method": "plain"}, 400, "invalid_request"),
        ({"prompt": "select_account"}, 400, "invalid_request"),
        ({"max_age": "-1"}, 400, "invalid_request"),
        ({"nonce": "n" * 513}, 400, "invalid_request"),
        ({"state": "s" * 2001}, 400, "invalid_request"),
        ({"request_uri": PREFIX + "x"}, 400, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, 400, "request_not_supported"),
        ({"client_id": "no-such-client"}, 401, "invalid_client"),
    ],
)
def test_a_request_the_authorization_endpoint_would_refuse_is_refused_when_pushed(
    http: httpx.Client, change: dict[str, str | None], status: int, error: str
) -> None:
    form = {k: v for k, v in (request_for(generate_token(48)) | change).items() if v is not None}
    r = (
        http.post(PAR, data=form)
        if "client_id" in change
        else http.post(PAR, data=form, auth=BASIC)
    )
    assert_oauth_error(r, status, error)


def test_a_confidential_client_proves_itself_to_push(http: httpx.Client) -> None:
    form = request_for(generate_token(48))
    assert_oauth_error(http.post(PAR, data=form), 401, "invalid_client")  # no secret
    wrong = ("test-pushed", "not-the-secret")
    assert_oauth_error(http.post(PAR, data=form, auth=wrong), 401, "invalid_client")
    # Once, as a form: no JSON, no parameter twice.
    r = http.post(PAR, json=form, auth=BASIC)
    assert_oauth_error(r, 400, "invalid_request")
    twice = [*form.items(), ("scope", "films")]
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    r = http.post(PAR, content=urlencode(twice), auth=BASIC, headers=form_type)
    assert_oauth_error(r, 400, "invalid_request")
