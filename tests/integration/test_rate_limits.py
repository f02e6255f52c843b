"""Rate limits over real HTTP, on an auth process of its own with limits on (the default)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from authlib.common.security import generate_token
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.ratelimit import PER_ACCOUNT, PER_IP
from tests.accounts import PASSWORD, code_for
from tests.conftest import Stack
from tests.dpop_keys import ProofKey
from tests.integration.test_private_key_jwt import assertion, with_assertion
from tests.integration.test_pushed_requests import BASIC as PUSHER
from tests.integration.test_pushed_requests import request_for
from tests.support import RESOURCE_SECRET, SERVER_SECRET, SPA_REDIRECT, unique_email


@pytest.fixture(scope="module")
def limited_auth(stack: Stack) -> Iterator[str]:
    service = stack.spawn("auth_service", "auth-limited", AUTH_RATE_LIMIT_ENABLED="true")
    try:
        yield service.url
    finally:
        service.stop()


def test_login_is_limited_per_account(limited_auth: str) -> None:
    email = unique_email("target")
    allowed = PER_ACCOUNT["login"].requests
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        codes = [
            http.post("/v1/auth/login", json={"email": email, "password": "guess-123"}).status_code
            for _ in range(allowed + 1)
        ]
        assert codes[:allowed] == [401] * allowed
        assert codes[allowed] == 429
        refused = http.post("/v1/auth/login", json={"email": email, "password": "guess-123"})
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


def test_resend_is_limited_per_ip(limited_auth: str) -> None:
    allowed = PER_IP["resend"].requests
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        codes = [
            http.post("/v1/auth/verify/resend", json={"email": unique_email()}).status_code
            for _ in range(allowed + 1)
        ]
    assert codes[:allowed] == [202] * allowed
    assert codes[allowed] == 429


def test_forgot_is_limited_per_account(limited_auth: str) -> None:
    email = unique_email("forgetful")
    allowed = PER_ACCOUNT["forgot"].requests
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        codes = [
            http.post("/v1/auth/password/forgot", json={"email": email}).status_code
            for _ in range(allowed + 1)
        ]
    assert codes == [202] * allowed + [429]


def test_signup_is_limited_per_account(limited_auth: str) -> None:
    """Each sign-up may email the address, so it has resend's budget per address: it
    had none, and 60 sign-ups an hour from one address mailed anyone that often."""
    email = unique_email("bombed")
    allowed = PER_ACCOUNT["signup"].requests
    body = {"email": email, "password": "a perfectly fine passphrase"}
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        codes = [http.post("/v1/auth/signup", json=body).status_code for _ in range(allowed + 1)]
    assert codes == [202] * allowed + [429]


def test_over_the_sign_up_budget_a_different_password_still_disputes(
    stack: Stack, limited_auth: str
) -> None:
    """A stranger spends the address's budget of sign-ups with their password: the
    owner's sign-up is refused, but still takes the stranger's password off the code."""
    email = unique_email("squatted")
    stranger = {"email": email, "password": "a stranger's passphrase"}
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        for _ in range(PER_ACCOUNT["signup"].requests):
            assert http.post("/v1/auth/signup", json=stranger).status_code == 202
        owner = {"email": email, "password": "the owner's passphrase"}
        assert http.post("/v1/auth/signup", json=owner).status_code == 429
        code_for(stack, email)  # the first email is there (a slow machine may send two:
        time.sleep(1.0)  # the 2 s cooldown can pass during the five); take the newest
        code = stack.smtp.to(email)[-1].code
        assert code is not None
        assert http.post("/v1/auth/verify", json={"email": email, "code": code}).status_code == 200
        assert http.post("/v1/auth/login", json=stranger).status_code == 401


def test_the_bearer_routes_that_check_a_secret_are_limited(stack: Stack, limited_auth: str) -> None:
    """Changing the password or deleting the account checks a password (and hashes):
    behind a token, but limited all the same (they had no limit). Confirming an address
    change, which checks a code, has a limit of its own too."""
    with httpx.Client(base_url=limited_auth, timeout=30) as http:  # its own database
        email = unique_email("guessing")
        body = {"email": email, "password": PASSWORD}
        assert http.post("/v1/auth/signup", json=body).status_code == 202
        verified = http.post(
            "/v1/auth/verify", json={"email": email, "code": code_for(stack, email)}
        )
        assert verified.status_code == 200, verified.text
        bearer = {"Authorization": f"Bearer {verified.json()['access_token']}"}
    allowed = PER_IP["reauth"].requests
    passwords = [PASSWORD, "another fine passphrase"]
    with httpx.Client(base_url=limited_auth, timeout=30, headers=bearer) as http:
        codes = []
        for i in range(allowed):  # right each time: no lockout, only the limit
            change = {"current_password": passwords[i % 2], "new_password": passwords[1 - i % 2]}
            codes.append(http.post("/v1/auth/password/change", json=change).status_code)
        assert codes == [204] * allowed
        delete = http.request("DELETE", "/v1/auth/me", json={"password": passwords[allowed % 2]})
        assert delete.status_code == 429  # the same budget
        assert delete.json()["error"] == "rate_limited"


def test_the_token_endpoint_shares_the_logins_limit(limited_auth: str) -> None:
    email = unique_email("oauth-target")
    allowed = PER_ACCOUNT["login"].requests
    form = {"grant_type": "password", "username": email, "password": "guess-123"}
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        answers = [http.post("/v1/auth/token", data=form) for _ in range(allowed + 1)]
        json_login = http.post("/v1/auth/login", json={"email": email, "password": "guess-123"})
    assert [a.json()["error"] for a in answers[:allowed]] == ["invalid_grant"] * allowed
    refused = answers[allowed]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert refused.json()["error_description"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert json_login.status_code == 429  # one budget for both ways in


def test_sign_in_codes_are_limited_per_account(limited_auth: str) -> None:
    email = unique_email("code-target")
    allowed = PER_ACCOUNT["login_code"].requests
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        codes = [
            http.post("/v1/auth/login/code", json={"email": email}).status_code
            for _ in range(allowed + 1)
        ]
    assert codes == [202] * allowed + [429]


INTROSPECT = "/v1/auth/introspect"


def test_guesses_at_a_clients_secret_stop(limited_auth: str) -> None:
    """Wrong secrets spend a budget per address and client, wherever a secret is checked;
    once it is spent even the right secret is refused, so guessing stops. Another client
    is not held up."""
    allowed = PER_IP["client_auth"].requests
    form = {"token": "never-issued"}
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        guesses = [
            http.post(INTROSPECT, data=form, auth=("test-api", f"guess-{n}")).status_code
            for n in range(allowed + 1)
        ]
        right = http.post(INTROSPECT, data=form, auth=("test-api", RESOURCE_SECRET))
        own = {"grant_type": "client_credentials"}
        token = http.post("/v1/auth/token", data=own, auth=("test-api", RESOURCE_SECRET))
        revoke = http.post("/v1/auth/revoke", data=form, auth=("test-api", RESOURCE_SECRET))
        other = http.post(INTROSPECT, data=form, auth=("test-server", SERVER_SECRET))
    assert guesses == [401] * allowed + [429]
    for refused in (right, token, revoke):
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert other.status_code == 200 and other.json() == {"active": False}


def test_forged_assertions_spend_the_same_budget(limited_auth: str) -> None:
    """Assertions signed with a key the client never registered (private_key_jwt) are
    guesses too: once the budget is spent, its own assertion is refused."""
    allowed = PER_IP["client_auth"].requests
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own = {"grant_type": "client_credentials"}
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        forged = [
            http.post(
                "/v1/auth/token", data=with_assertion(assertion(key=forger), **own)
            ).status_code
            for _ in range(allowed + 1)
        ]
        right = http.post("/v1/auth/token", data=with_assertion(assertion(), **own))
        form = {"token": "never-issued"}
        other = http.post(INTROSPECT, data=form, auth=("test-server", SERVER_SECRET))
    assert forged == [401] * allowed + [429]
    assert right.status_code == 429 and right.json()["error"] == "rate_limited"
    assert other.status_code == 200  # another client is not held up


def test_pushed_requests_are_limited_per_address(limited_auth: str) -> None:
    """Anyone may push as a public client, and each request is a row until it expires. A
    confidential client, which proved itself, counts on its own: its server pushes for
    every person it sends to sign in."""
    allowed = PER_IP["par"].requests
    form = request_for(generate_token(48), client_id="test-spa", redirect_uri=SPA_REDIRECT)
    with httpx.Client(base_url=limited_auth, timeout=30) as http:
        answers = [http.post("/v1/auth/par", data=form) for _ in range(allowed + 1)]
        own = http.post("/v1/auth/par", data=request_for(generate_token(48)), auth=PUSHER)
    assert [r.status_code for r in answers] == [201] * allowed + [429]
    assert answers[-1].json()["error"] == "rate_limited"
    assert int(answers[-1].headers["retry-after"]) > 0
    assert own.status_code == 201, own.text


def test_a_service_is_counted_on_its_own(stack: Stack) -> None:
    """A client that proves itself has budgets of its own (`client:introspect`,
    `client:client_token`), which no other client spends. (DPoP proofs at the token
    endpoint are counted per address, `ip:dpop`, before any is checked; a confidential
    client's, pushing its requests, per client, `client:dpop`.)"""
    service = stack.spawn(
        "auth_service",
        "auth-client-limited",
        AUTH_RATE_LIMIT_ENABLED="true",
        AUTH_RATE_LIMITS='{"client:introspect": [3, 60], "client:client_token": [2, 60], '
        '"ip:dpop": [3, 60], "client:dpop": [2, 60]}',
    )
    form, own = {"token": "never-issued"}, {"grant_type": "client_credentials"}
    api = ("test-api", RESOURCE_SECRET)
    try:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            asked = [http.post(INTROSPECT, data=form, auth=api).status_code for _ in range(4)]
            other = http.post(INTROSPECT, data=form, auth=("test-server", SERVER_SECRET))
            tokens = [http.post("/v1/auth/token", data=own, auth=api) for _ in range(3)]
            proofs = [
                http.post("/v1/auth/token", data=own, headers={"DPoP": "not a proof"})
                for _ in range(4)
            ]
            key, par = ProofKey(), f"{service.url}/v1/auth/par"
            pushed = [
                http.post(
                    "/v1/auth/par",
                    data=request_for(generate_token(48)),
                    auth=PUSHER,
                    headers={"DPoP": key.proof("POST", par)},
                ).status_code
                for _ in range(3)
            ]
    finally:
        service.stop()
    assert [r.json()["error"] for r in proofs] == ["invalid_dpop_proof"] * 3 + ["rate_limited"]
    assert pushed == [201, 201, 429]  # the address's budget, spent above, is not theirs
    assert asked == [200, 200, 200, 429]
    assert other.status_code == 200
    assert [t.status_code for t in tokens] == [200, 200, 429]
    assert tokens[2].json()["error"] == "rate_limited"
