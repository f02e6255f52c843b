"""Two-step sign-in on the real stack: an authenticator app (TOTP, computed here as an app
would, from the secret auth hands out) and recovery codes, through every way in."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from tests.accounts import (
    PASSWORD,
    Account,
    audit_rows,
    auth_rows,
    bearer,
    code_for,
    cooled_down_account,
    login,
    new_account,
    new_admin,
)
from tests.conftest import TEST_CODE_BUDGET, Stack


class App:
    """An authenticator app holding the secret. Each code it gives is for a step later than
    the last it gave (auth takes one step either side of now, and never a step twice), so a
    test may ask for two codes in a row; a third in the same 30 s waits for the clock."""

    def __init__(self, secret: str) -> None:
        padded = secret + "=" * (-len(secret) % 8)
        self._totp = TOTP(base64.b32decode(padded), 6, SHA1(), 30)  # noqa: S303  # RFC 6238's
        self._last = -1

    def code(self) -> str:
        while True:
            now = int(time.time()) // 30
            step = max(now, self._last + 1)
            if step <= now + 1:
                self._last = step
                return self._totp.generate(step * 30).decode()
            time.sleep(1)

    def near(self) -> set[str]:
        """The codes of the steps auth would take now."""
        now = int(time.time()) // 30
        return {self._totp.generate(step * 30).decode() for step in range(now - 1, now + 3)}

    def code_now_used(self) -> str:
        """The code of the last step given: already spent."""
        return self._totp.generate(self._last * 30).decode()


def turn_on(http: httpx.Client, account: Account, locale: str = "en") -> tuple[App, list[str]]:
    setup = http.post(
        "/v1/auth/mfa/totp", json={"password": account.password}, headers=account.bearer
    )
    assert setup.status_code == 200, setup.text
    assert setup.headers["cache-control"] == "no-store"
    app = App(setup.json()["secret"])
    confirm = {"code": app.code(), "locale": locale}
    done = http.post("/v1/auth/mfa/totp/confirm", json=confirm, headers=account.bearer)
    assert done.status_code == 200, done.text
    return app, done.json()["recovery_codes"]


def password_login(http: httpx.Client, account: Account) -> httpx.Response:
    return http.post("/v1/auth/login", json={"email": account.email, "password": account.password})


def mfa_token(http: httpx.Client, account: Account) -> str:
    first = password_login(http, account)
    assert first.status_code == 403, first.text
    body = first.json()
    assert body["error"] == "mfa_required"
    assert "access_token" not in body and "refresh_token" not in body
    return str(body["mfa_token"])


def second_step(http: httpx.Client, token: str, code: str) -> httpx.Response:
    return http.post("/v1/auth/login/mfa", json={"mfa_token": token, "code": code})


def error(response: httpx.Response) -> Any:
    return response.json()["error"]


def wrong_code(app: App) -> str:
    """Not the code of any step near now."""
    return "000000" if "000000" not in app.near() else "999999"


def test_turning_it_on_then_signing_in_with_the_app(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "mfa-on")
    status = http.get("/v1/auth/mfa", headers=account.bearer).json()
    assert status == {"totp": False, "recovery_codes_left": 0}
    # Without the password, nothing.
    wrong = http.post(
        "/v1/auth/mfa/totp", json={"password": "not it at all"}, headers=account.bearer
    )
    assert error(wrong) == "invalid_password"
    # Confirming before any setup.
    early = http.post("/v1/auth/mfa/totp/confirm", json={"code": "123456"}, headers=account.bearer)
    assert (early.status_code, error(early)) == (409, "mfa_setup_not_started")

    setup = http.post("/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=account.bearer)
    secret, uri = setup.json()["secret"], setup.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    assert "issuer=" in uri and account.email.split("@")[0] in uri
    # Until confirmed, sign-in is as before.
    assert password_login(http, account).status_code == 200
    app = App(secret)
    bad = http.post(
        "/v1/auth/mfa/totp/confirm", json={"code": wrong_code(app)}, headers=account.bearer
    )
    assert error(bad) == "invalid_code"
    done = http.post("/v1/auth/mfa/totp/confirm", json={"code": app.code()}, headers=account.bearer)
    assert done.status_code == 200, done.text
    assert done.headers["cache-control"] == "no-store"
    codes = done.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    status = http.get("/v1/auth/mfa", headers=account.bearer).json()
    assert status == {"totp": True, "recovery_codes_left": 10}
    # A typo while setting it up does not count against signing in later.
    user_id = account.id.replace("-", "")
    spent = auth_rows(stack, "SELECT failures FROM totp_factors WHERE user_id = ?", user_id)
    assert spent == [(0,)]
    again = http.post("/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=account.bearer)
    assert (again.status_code, error(again)) == (409, "mfa_already_enabled")

    token = mfa_token(http, account)
    # A wrong code leaves the token usable; a code already used is a wrong code.
    assert error(second_step(http, token, app.code_now_used())) == "invalid_code"
    pair = second_step(http, token, app.code())
    assert pair.status_code == 200, pair.text
    me = http.get("/v1/auth/me", headers=bearer(pair.json()["access_token"]))
    assert me.json()["email"] == account.email
    # The token is spent.
    assert error(second_step(http, token, app.code_now_used())) == "invalid_mfa_token"
    events = [row[0] for row in audit_rows(stack, account.id)]
    assert events[-4:] == ["mfa_enabled", "mfa_challenged", "mfa_failed", "login_ok"]
    login_ok = [row for row in audit_rows(stack, account.id) if row[0] == "login_ok"]
    assert '"password+totp"' in login_ok[-1][2]
    assert "mfa_setup_started" in events
    # Nothing readable at rest: the secret is sealed, the recovery codes are HMACs.
    sealed = auth_rows(
        stack, "SELECT secret FROM totp_factors WHERE user_id = ?", account.id.replace("-", "")
    )
    assert len(sealed) == 1 and secret not in sealed[0][0]
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert (
        raw.hex() not in sealed[0][0] and base64.urlsafe_b64encode(raw).decode() not in sealed[0][0]
    )
    hmacs = {row[0] for row in auth_rows(stack, "SELECT code_hmac FROM recovery_codes")}
    assert len(hmacs) >= 10 and not {c.replace("-", "") for c in codes} & hmacs


def test_a_recovery_code_works_once(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "mfa-recovery")
    _, codes = turn_on(http, account)
    # Case, spaces and hyphens do not matter.
    typed = f"  {codes[0].upper().replace('-', ' ')} "
    pair = second_step(http, mfa_token(http, account), typed.strip())
    assert pair.status_code == 200, pair.text
    again = second_step(http, mfa_token(http, account), codes[0])
    assert error(again) == "invalid_code"
    assert http.get("/v1/auth/mfa", headers=account.bearer).json()["recovery_codes_left"] == 9
    method = [row[2] for row in audit_rows(stack, account.id) if row[0] == "login_ok"][-1]
    assert '"password+recovery"' in method


def test_an_mfa_token_is_burned_by_wrong_codes_and_expires(
    stack: Stack, http: httpx.Client
) -> None:
    account = new_account(stack, http, "mfa-burn")
    app, codes = turn_on(http, account)
    token = mfa_token(http, account)
    for left in (4, 3, 2, 1, 0):  # AUTH_CODE_MAX_ATTEMPTS is 5
        wrong = second_step(http, token, wrong_code(app)).json()
        assert (wrong["error"], wrong["tries_left"]) == ("invalid_code", left)
    burned = second_step(http, token, app.code())
    assert (burned.status_code, error(burned)) == (401, "invalid_mfa_token")
    assert error(second_step(http, "made-up", codes[0])) == "invalid_mfa_token"
    # Past its lifetime (moved back in the database, as the clock would).
    token = mfa_token(http, account)
    auth_rows(stack, "UPDATE mfa_challenges SET expires_at = '2000-01-01 00:00:00.000000'")
    assert error(second_step(http, token, codes[1])) == "invalid_mfa_token"


def test_the_second_step_has_a_budget_of_its_own(stack: Stack, http: httpx.Client) -> None:
    """Strangers' wrong emailed codes (anyone may send them) do not lock the owner out of
    the second step; a thief with the password gains nothing by starting sign-ins again."""
    account = new_account(stack, http, "mfa-budget")
    app, codes = turn_on(http, account)
    for _ in range(TEST_CODE_BUDGET + 1):
        wrong = {"email": account.email, "code": "000000"}
        http.post("/v1/auth/login/code/verify", json=wrong)
    owner = second_step(http, mfa_token(http, account), codes[0])
    assert owner.status_code == 200, owner.text

    spent = 0
    while spent < TEST_CODE_BUDGET:
        token = mfa_token(http, account)
        for _ in range(min(4, TEST_CODE_BUDGET - spent)):
            assert error(second_step(http, token, wrong_code(app))) == "invalid_code"
            spent += 1
    over = second_step(http, mfa_token(http, account), codes[1])
    assert (over.status_code, error(over)) == (429, "too_many_code_attempts")
    assert int(over.headers["retry-after"]) > 0
    # Turning it off is refused the same way, before any code is looked at.
    off = http.request(
        "DELETE",
        "/v1/auth/mfa/totp",
        json={"password": PASSWORD, "code": codes[1]},
        headers=account.bearer,
    )
    assert error(off) == "too_many_code_attempts"
    # The right recovery code was not spent by the refusals.
    auth_rows(
        stack,
        "UPDATE totp_factors SET failures = 0 WHERE user_id = ?",
        account.id.replace("-", ""),
    )
    assert second_step(http, mfa_token(http, account), codes[1]).status_code == 200


def test_turning_it_on_ends_the_other_sessions(stack: Stack, http: httpx.Client) -> None:
    """A session opened with the password alone (maybe a thief's) does not go on."""
    account = new_account(stack, http, "mfa-sessions")
    other = login(stack, http, account.email)
    turn_on(http, account)
    refused = http.post("/v1/auth/token/refresh", json={"refresh_token": other.refresh_token})
    assert error(refused) == "invalid_grant"
    mine = http.post("/v1/auth/token/refresh", json={"refresh_token": account.refresh_token})
    assert mine.status_code == 200, mine.text


def test_an_app_sealed_under_a_replaced_secret(stack: Stack, http: httpx.Client) -> None:
    """The code secret was replaced: the app cannot be checked, which is said (503), not
    taken for a wrong code; an admin turns it off and the owner signs in again."""
    account = new_account(stack, http, "mfa-unsealable")
    app, _ = turn_on(http, account)
    user_id = account.id.replace("-", "")
    elsewhere = base64.urlsafe_b64encode(bytes(60)).decode()  # not sealed under our key
    auth_rows(stack, "UPDATE totp_factors SET secret = ? WHERE user_id = ?", elsewhere, user_id)
    token = mfa_token(http, account)
    answer = second_step(http, token, app.code())
    assert (answer.status_code, error(answer)) == (503, "mfa_unavailable")
    assert auth_rows(stack, "SELECT failures FROM totp_factors WHERE user_id = ?", user_id) == [
        (0,)
    ]
    admin = new_admin(stack, http)
    off = http.patch(f"/v1/admin/users/{account.id}", json={"mfa": False}, headers=admin.bearer)
    assert off.json()["mfa"] is False
    assert password_login(http, account).status_code == 200


def test_an_app_code_may_be_typed_with_its_space(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "mfa-space")
    setup = http.post("/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=account.bearer)
    app = App(setup.json()["secret"])
    code = app.code()
    spaced = {"code": f"{code[:3]} {code[3:]}"}
    done = http.post("/v1/auth/mfa/totp/confirm", json=spaced, headers=account.bearer)
    assert done.status_code == 200, done.text
    code = app.code()
    answer = second_step(http, mfa_token(http, account), f"{code[:3]} {code[3:]}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"


def test_every_way_in_asks_for_the_second_step(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "mfa-ways")
    _, codes = turn_on(http, account)
    # The emailed code.
    assert http.post("/v1/auth/login/code", json={"email": account.email}).status_code == 202
    by_code = http.post(
        "/v1/auth/login/code/verify",
        json={"email": account.email, "code": code_for(stack, account.email, count=3)},
    )
    assert (by_code.status_code, error(by_code)) == (403, "mfa_required")
    pair = second_step(http, by_code.json()["mfa_token"], codes[0])
    assert pair.status_code == 200, pair.text
    method = [row[2] for row in audit_rows(stack, account.id) if row[0] == "login_ok"][-1]
    assert '"code+recovery"' in method
    # The OAuth 2.0 token endpoint, as Auth0 answers it.
    form = {"grant_type": "password", "username": account.email, "password": account.password}
    oauth = http.post("/v1/auth/token", data=form)
    assert oauth.status_code == 403, oauth.text
    assert oauth.json()["error"] == "mfa_required" and oauth.json()["mfa_token"]
    assert oauth.headers["cache-control"] == "no-store"
    assert second_step(http, oauth.json()["mfa_token"], codes[1]).status_code == 200
    # A wrong password is still just that.
    wrong = http.post("/v1/auth/login", json={"email": account.email, "password": "nope nope"})
    assert error(wrong) == "invalid_credentials"


def test_a_password_reset_sends_waiting_sign_ins_back(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "mfa-reset")
    _, codes = turn_on(http, account)
    token = mfa_token(http, account)
    http.post("/v1/auth/password/forgot", json={"email": account.email})
    reset = http.post(
        "/v1/auth/password/reset",
        json={
            "email": account.email,
            "code": code_for(stack, account.email, count=3),
            "new_password": "another fine passphrase",
        },
    )
    assert reset.status_code == 204, reset.text
    assert error(second_step(http, token, codes[0])) == "invalid_mfa_token"
    # And the reset did not turn two-step sign-in off.
    account.password = "another fine passphrase"
    assert second_step(http, mfa_token(http, account), codes[0]).status_code == 200


def test_turning_it_off_and_new_recovery_codes(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "mfa-off")
    app, codes = turn_on(http, account)
    path = "/v1/auth/mfa/recovery-codes"
    wrong_password = http.post(
        path, json={"password": "not the one", "code": codes[0]}, headers=account.bearer
    )
    assert error(wrong_password) == "invalid_password"
    wrong = http.post(
        path, json={"password": PASSWORD, "code": wrong_code(app)}, headers=account.bearer
    )
    assert error(wrong) == "invalid_code"
    renewed = http.post(path, json={"password": PASSWORD, "code": codes[0]}, headers=account.bearer)
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()["recovery_codes"]
    assert not set(fresh) & set(codes)
    assert error(second_step(http, mfa_token(http, account), codes[1])) == "invalid_code"
    assert http.get("/v1/auth/mfa", headers=account.bearer).json()["recovery_codes_left"] == 10

    off = http.request(
        "DELETE",
        "/v1/auth/mfa/totp",
        json={"password": PASSWORD, "code": app.code()},
        headers=account.bearer,
    )
    assert off.status_code == 204, off.text
    assert http.get("/v1/auth/mfa", headers=account.bearer).json() == {
        "totp": False,
        "recovery_codes_left": 0,
    }
    assert password_login(http, account).status_code == 200
    subjects = [mail.message["Subject"] for mail in stack.smtp.wait_for(account.email, count=3)]
    assert subjects[1:] == [
        "Two-step sign-in is on for your Films account",
        "Two-step sign-in is off for your Films account",
    ]
    again = http.request(
        "DELETE",
        "/v1/auth/mfa/totp",
        json={"password": PASSWORD, "code": fresh[0]},
        headers=account.bearer,
    )
    assert (again.status_code, error(again)) == (409, "mfa_not_enabled")
    assert auth_rows(
        stack, "SELECT count(*) FROM recovery_codes WHERE user_id = ?", account.id.replace("-", "")
    ) == [(0,)]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mfa_token": "x"},
        {"mfa_token": "x", "code": "12345"},
        {"mfa_token": "x", "code": "1234567"},
        {"mfa_token": "x", "code": "abc"},
        {"mfa_token": "x", "code": "a" * 40},
        {"mfa_token": "x" * 300, "code": "123456"},
        {"mfa_token": "x", "code": "123456", "extra": 1},
        {"mfa_token": 5, "code": 123456},
    ],
)
def test_malformed_second_steps_are_refused(http: httpx.Client, body: dict[str, Any]) -> None:
    answer = http.post("/v1/auth/login/mfa", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"


def one_code_one_sign_in(http: httpx.Client, account: Account) -> None:
    """Sign-ins racing with the same app code (one seen over a shoulder): one gets in."""
    app, _ = turn_on(http, account)
    tokens = [mfa_token(http, account) for _ in range(6)]
    code = app.code()
    with ThreadPoolExecutor(len(tokens)) as pool:
        answers = list(pool.map(lambda token: second_step(http, token, code), tokens))
    assert sorted(a.status_code for a in answers) == [200] + [400] * (len(tokens) - 1)


def test_one_code_opens_one_sign_in(stack: Stack, http: httpx.Client) -> None:
    one_code_one_sign_in(http, new_account(stack, http, "mfa-race"))


def test_an_admin_turns_it_off_for_someone_locked_out(stack: Stack, http: httpx.Client) -> None:
    """The owner lost the app and the recovery codes: an admin turns it off, the owner is
    told, and the password alone signs in again."""
    account = new_account(stack, http, "mfa-lost")
    turn_on(http, account)
    admin = new_admin(stack, http)
    path = f"/v1/admin/users/{account.id}"
    assert http.get(path, headers=admin.bearer).json()["mfa"] is True
    listed = http.get("/v1/admin/users", params={"q": "mfa-lost"}, headers=admin.bearer).json()
    assert [u["mfa"] for u in listed["items"] if u["email"] == account.email] == [True]
    token = mfa_token(http, account)
    on = http.patch(path, json={"mfa": True}, headers=admin.bearer)
    assert on.status_code == 422  # only the owner's app can turn it on
    off = http.patch(path, json={"mfa": False}, headers=admin.bearer)
    assert off.status_code == 200, off.text
    assert off.json()["mfa"] is False
    assert password_login(http, account).status_code == 200
    assert error(second_step(http, token, "abcde-fghjk")) == "invalid_mfa_token"
    notice = stack.smtp.wait_for(account.email, count=3)[-1]
    assert notice.message["Subject"] == "Two-step sign-in is off for your Films account"
    disabled = [row for row in audit_rows(stack, account.id) if row[0] == "mfa_disabled"]
    assert len(disabled) == 1 and admin.id in disabled[0][2]
    # Again: nothing to turn off, nothing sent.
    assert http.patch(path, json={"mfa": False}, headers=admin.bearer).json()["mfa"] is False
    # An admin's own goes off as anyone's does, with the password and a code: not with a
    # (maybe stolen) admin token alone.
    own = http.patch(f"/v1/admin/users/{admin.id}", json={"mfa": False}, headers=admin.bearer)
    assert (own.status_code, error(own)) == (409, "own_two_step")


def test_an_admins_notice_is_in_the_owners_language(stack: Stack, http: httpx.Client) -> None:
    """The owner turned the app on in Russian; the notice that an admin turned it off,
    which the owner did not ask for, is in Russian too (it used to be in English), and so
    is the notice of a change whose request names no language."""
    account = new_account(stack, http, "mfa-ru")
    turn_on(http, account, locale="ru")
    admin = new_admin(stack, http)
    off = http.patch(f"/v1/admin/users/{account.id}", json={"mfa": False}, headers=admin.bearer)
    assert off.status_code == 200, off.text
    notice = stack.smtp.wait_for(account.email, count=3)[-1]
    assert notice.message["Subject"] == "Двухэтапный вход в аккаунт Films выключен"
    body = {"current_password": account.password, "new_password": "another passphrase 9"}
    changed = http.post("/v1/auth/password/change", json=body, headers=account.bearer)
    assert changed.status_code == 204, changed.text
    notice = stack.smtp.wait_for(account.email, count=4)[-1]
    assert notice.message["Subject"] == "Пароль вашего аккаунта Films изменён"


def amr(pair: httpx.Response) -> Any:
    return jwt.decode(pair.json()["access_token"], options={"verify_signature": False}).get("amr")


def test_tokens_say_how_the_session_was_signed_in(stack: Stack, http: httpx.Client) -> None:
    """RFC 8176 `amr`, kept by every refresh: a service can ask for "mfa"."""
    account = new_account(stack, http, "mfa-amr")
    assert account.claims["amr"] == ["email"]  # the verification's session
    by_password = password_login(http, account)
    assert amr(by_password) == ["pwd"]
    app, codes = turn_on(http, account)
    both = second_step(http, mfa_token(http, account), app.code())
    assert amr(both) == ["pwd", "otp", "mfa"]
    refreshed = http.post(
        "/v1/auth/token/refresh", json={"refresh_token": both.json()["refresh_token"]}
    )
    assert amr(refreshed) == ["pwd", "otp", "mfa"]
    recovered = second_step(http, mfa_token(http, account), codes[0])
    assert amr(recovered) == ["pwd", "recovery", "mfa"]


def test_admin_routes_may_require_a_two_step_session(stack: Stack, http: httpx.Client) -> None:
    """AUTH_ADMIN_REQUIRES_MFA and FILMS_ADMIN_REQUIRES_MFA: an admin token of a
    password-only session is refused by the admin routes; one that passed the app is not."""
    strict_auth = stack.spawn(
        "auth_service",
        "auth-strict",
        AUTH_DATABASE_URL=stack.auth.env["AUTH_DATABASE_URL"],
        AUTH_ADMIN_REQUIRES_MFA="true",
    )
    strict_films = stack.spawn("films_service", "films-strict", FILMS_ADMIN_REQUIRES_MFA="true")
    try:
        admin = new_admin(stack, http)
        users = f"{strict_auth.url}/v1/admin/users"
        film = f"{strict_films.url}/v1/films/999999"
        refused = http.get(users, headers=admin.bearer)
        assert (refused.status_code, error(refused)) == (403, "mfa_session_required")
        refused = http.delete(f"{users}/{admin.id}/passkeys", headers=admin.bearer)
        assert (refused.status_code, error(refused)) == (403, "mfa_session_required")
        notices = f"{strict_auth.url}/v1/admin/logout-notices"
        refused = http.get(notices, headers=admin.bearer)
        assert (refused.status_code, error(refused)) == (403, "mfa_session_required")
        refused = http.patch(film, json={"year": 2000}, headers=admin.bearer)
        assert (refused.status_code, error(refused)) == (403, "mfa_session_required")
        assert http.get(f"{stack.auth.url}/v1/admin/users", headers=admin.bearer).is_success

        app, _ = turn_on(http, admin)
        pair = second_step(http, mfa_token(http, admin), app.code())
        two_step = bearer(pair.json()["access_token"])
        assert http.get(users, headers=two_step).status_code == 200
        assert http.get(notices, headers=two_step).status_code == 200
        # Past the check: the film simply does not exist.
        assert http.patch(film, json={"year": 2000}, headers=two_step).status_code == 404
    finally:
        strict_films.stop()
        strict_auth.stop()
