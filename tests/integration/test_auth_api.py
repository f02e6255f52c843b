"""The auth HTTP API against the running service (real broker, SMTP, SQLite)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import jwt
import pytest
from passlib.context import CryptContext

from auth_service.models import SignupRequest
from auth_service.passwords import normalize
from common.clock import utcnow
from common.db import make_engine, make_sessionmaker
from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.support import unique_email

PASSWORD = "a perfectly fine passphrase"


def signup(stack: Stack, http: httpx.Client, email: str, password: str = PASSWORD) -> str:
    r = http.post(f"{stack.auth.url}/v1/auth/signup", json={"email": email, "password": password})
    assert r.status_code == 202, r.text
    code = stack.smtp.wait_for(email)[-1].code
    assert code is not None
    return code


def verify(stack: Stack, http: httpx.Client, email: str, code: str) -> httpx.Response:
    return http.post(f"{stack.auth.url}/v1/auth/verify", json={"email": email, "code": code})


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_signup_answers_the_same_for_new_unverified_and_verified(
    stack: Stack, http: httpx.Client
) -> None:
    verified = unique_email("verified")
    verify(stack, http, verified, signup(stack, http, verified))
    time.sleep(TEST_RESEND_COOLDOWN)
    answers = [
        http.post(f"{stack.auth.url}/v1/auth/signup", json={"email": address, "password": PASSWORD})
        for address in (unique_email("fresh"), verified)
    ]
    assert {(a.status_code, a.text) for a in answers} == {(202, answers[0].text)}
    # The owner of the verified address learns someone tried; no code is sent.
    mail = stack.smtp.wait_for(verified, count=2)[-1]
    assert mail.message["Subject"] == "You already have a Films account"
    assert mail.code is None


def test_code_is_single_use(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    code = signup(stack, http, email)
    assert verify(stack, http, email, code).status_code == 200
    again = verify(stack, http, email, code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_code"


def test_code_burns_after_five_wrong_tries(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    code = signup(stack, http, email)
    for _ in range(5):
        r = verify(stack, http, email, wrong(code))
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_code"
    # The right code no longer works: the budget was spent.
    assert verify(stack, http, email, code).status_code == 400


def test_verify_unknown_email_looks_like_a_wrong_code(stack: Stack, http: httpx.Client) -> None:
    r = verify(stack, http, unique_email("nobody"), "123456")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_code"


def test_resend_issues_a_new_code_and_retires_the_old(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    r = http.post(f"{stack.auth.url}/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202, r.text
    # Inside the cooldown nothing more is sent, but the answer is the same. Asked before
    # waiting for the first email, whose delivery may outlast the 2 s test cooldown.
    r = http.post(f"{stack.auth.url}/v1/auth/verify/resend", json={"email": email})
    assert r.status_code == 202
    old = stack.smtp.wait_for(email)[-1].code
    assert old is not None
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    assert len(stack.smtp.to(email)) == 1
    r = http.post(f"{stack.auth.url}/v1/auth/verify/resend", json={"email": email})
    assert r.status_code == 202
    new = stack.smtp.wait_for(email, count=2)[-1].code
    assert new is not None
    if new != old:
        assert verify(stack, http, email, old).status_code == 400
    assert verify(stack, http, email, new).status_code == 200


def test_resend_for_unknown_address_answers_the_same(stack: Stack, http: httpx.Client) -> None:
    known = unique_email()
    signup(stack, http, known)
    answers = {
        (r.status_code, r.text)
        for r in (
            http.post(f"{stack.auth.url}/v1/auth/verify/resend", json={"email": address})
            for address in (known, unique_email("unknown"))
        )
    }
    assert len(answers) == 1


def test_login_rules(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    verify(stack, http, email, signup(stack, http, email))
    url = f"{stack.auth.url}/v1/auth/login"
    assert http.post(url, json={"email": email, "password": PASSWORD}).status_code == 200
    assert http.post(url, json={"email": email.upper(), "password": PASSWORD}).status_code == 200
    bad = http.post(url, json={"email": email, "password": PASSWORD + "!"})
    assert bad.status_code == 401
    unknown = http.post(url, json={"email": unique_email("ghost"), "password": PASSWORD})
    assert unknown.status_code == 401
    assert bad.json() == unknown.json()


def test_access_token_claims_and_jwks(stack: Stack, http: httpx.Client) -> None:
    email = unique_email()
    pair = verify(stack, http, email, signup(stack, http, email)).json()
    jwks = http.get(f"{stack.auth.url}/.well-known/jwks.json").json()
    [key] = jwks["keys"]
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == "RS256"
    assert header["kid"] == key["kid"]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(pair["access_token"], public, algorithms=["RS256"], audience="api")
    assert set(claims) >= {"iss", "sub", "aud", "exp", "iat", "jti", "roles"}
    assert claims["exp"] - claims["iat"] == 900
    assert "d" not in key  # never the private exponent


def logs_in(stack: Stack, http: httpx.Client, email: str, password: str) -> bool:
    r = http.post(f"{stack.auth.url}/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


@pytest.mark.parametrize("stranger_first", [False, True])
def test_a_second_signup_with_another_password_cannot_set_it(
    stack: Stack, http: httpx.Client, stranger_first: bool
) -> None:
    """Two sign-ups for one unverified address with different passwords, whichever came
    first: neither password becomes the account's. Verification signs in whoever reads
    the mail (the owner), who then sets a password with "forgot password". Before, the
    newest sign-up's password rode on the only live code, the one in the owner's inbox."""
    url = f"{stack.auth.url}/v1/auth/signup"
    owner, stranger = "the owner's passphrase", "a stranger's passphrase"
    first, second = (stranger, owner) if stranger_first else (owner, stranger)
    for _ in range(3):  # again if a busy machine took the cooldown between the two
        email = unique_email()
        asked = time.monotonic()
        assert http.post(url, json={"email": email, "password": first}).status_code == 202
        # Within the cooldown: no second email. Asked before waiting for the first email:
        # its delivery may take longer than the test's 2 s cooldown on a busy machine.
        in_time = time.monotonic() - asked < TEST_RESEND_COOLDOWN - 0.5
        assert http.post(url, json={"email": email, "password": second}).status_code == 202
        if in_time:
            break
    else:
        pytest.fail("the machine never asked twice within the cooldown")
    [received] = stack.smtp.wait_for(email)
    time.sleep(0.5)  # a second email, had one been sent, would likely be here by now
    assert len(stack.smtp.to(email)) == 1
    assert received.code is not None
    assert verify(stack, http, email, received.code).status_code == 200  # signed in
    assert not logs_in(stack, http, email, owner)
    assert not logs_in(stack, http, email, stranger)


def test_after_the_cooldown_the_newest_code_carries_no_strangers_password(
    stack: Stack, http: httpx.Client
) -> None:
    """The same again after the cooldown, when the stranger's sign-up sends a new code
    and retires the owner's: the owner, entering the newest code, gets no stranger's
    password. A sign-up repeated with the same password keeps it."""
    email = unique_email()
    owner, stranger = "the owner's passphrase", "a stranger's passphrase"
    signup(stack, http, email, owner)
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    signup(stack, http, email, owner)  # didn't see the email, signed up again
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    url = f"{stack.auth.url}/v1/auth/signup"
    assert http.post(url, json={"email": email, "password": stranger}).status_code == 202
    newest = stack.smtp.wait_for(email, 3)[-1].code
    assert newest is not None
    assert verify(stack, http, email, newest).status_code == 200
    assert not logs_in(stack, http, email, stranger)
    assert not logs_in(stack, http, email, owner)

    other = unique_email()
    signup(stack, http, other, owner)
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    assert http.post(url, json={"email": other, "password": owner}).status_code == 202
    code = stack.smtp.wait_for(other, 2)[-1].code  # the second email's: the first is retired
    assert code is not None
    assert verify(stack, http, other, code).status_code == 200
    assert logs_in(stack, http, other, owner)


def test_a_new_password_is_neither_a_common_one_nor_the_address(
    stack: Stack, http: httpx.Client
) -> None:
    """Refused as sign-up, reset and change passwords, with nothing sent; a 422 whose
    details name the field and the reason (the web says it in words)."""
    from tests.accounts import new_account

    def refused(r: httpx.Response, field: str, kind: str) -> None:
        assert r.status_code == 422, r.text
        assert r.json()["details"] == [{"loc": ["body", field], "type": kind}]

    email = unique_email("picky")
    url = stack.auth.url
    for password, kind in (("Password123", "password_too_common"), (email, "password_is_email")):
        refused(
            http.post(f"{url}/v1/auth/signup", json={"email": email, "password": password}),
            "password",
            kind,
        )
        body = {"email": email, "code": "123456", "new_password": password}
        refused(http.post(f"{url}/v1/auth/password/reset", json=body), "new_password", kind)
    account = new_account(stack, http, "picky")
    for password, kind in (
        ("iloveyou1", "password_too_common"),
        (account.email.upper(), "password_is_email"),
    ):
        body = {"current_password": account.password, "new_password": password}
        r = http.post(f"{url}/v1/auth/password/change", json=body, headers=account.bearer)
        refused(r, "new_password", kind)
    assert stack.smtp.to(email) == []


def test_a_signup_its_process_left_is_carried_out_later(stack: Stack, http: httpx.Client) -> None:
    """A sign-up accepted by a process that stopped before carrying it out (its row is
    all that is left) is carried out by the instance relaying the outbox: the code is
    emailed, and verifying it makes the password chosen at sign-up the account's."""
    email = unique_email("left")
    asyncio.run(leave_signup(stack, email, PASSWORD))
    # Resumed within a quarter of AUTH_SIGNUP_RESUME_AFTER_SECONDS, then relayed and sent.
    code = stack.smtp.wait_for(email, timeout=60)[-1].code
    assert code is not None
    assert verify(stack, http, email, code).status_code == 200
    assert logs_in(stack, http, email, PASSWORD)


async def leave_signup(stack: Stack, email: str, password: str) -> None:
    """What a process that accepted a sign-up a while ago and then died leaves behind."""
    hasher = CryptContext(schemes=["argon2"], argon2__type="ID")
    engine = make_engine(stack.auth.env["AUTH_DATABASE_URL"])
    try:
        async with make_sessionmaker(engine).begin() as session:
            session.add(
                SignupRequest(
                    email=email,
                    password_hash=hasher.hash(normalize(password)),
                    locale="en",
                    send=True,
                    accepted_at=utcnow() - timedelta(minutes=5),
                )
            )
    finally:
        await engine.dispose()
