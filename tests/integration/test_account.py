"""Account self-service on the real stack: change the password, change the email address,
delete the account (and films and the mailer forgetting the user), hostile cases included."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.accounts import (
    PASSWORD,
    Account,
    audit_rows,
    bearer,
    code_for,
    cooled_down_account,
    login,
    new_account,
)
from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import wrong
from tests.support import Minter, unique_email, wait_until

NEW_PASSWORD = "an entirely new passphrase"


def refresh(http: httpx.Client, account: Account) -> httpx.Response:
    return http.post("/v1/auth/token/refresh", json={"refresh_token": account.refresh_token})


def me(http: httpx.Client, account: Account) -> httpx.Response:
    return http.get("/v1/auth/me", headers=account.bearer)


# -- password ---------------------------------------------------------------------------


def change_password(http: httpx.Client, account: Account, current: str) -> httpx.Response:
    return http.post(
        "/v1/auth/password/change",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=account.bearer,
    )


def test_password_change_ends_every_other_session(stack: Stack, http: httpx.Client) -> None:
    here = cooled_down_account(stack, http, "pw-change")
    elsewhere = login(stack, http, here.email)
    wrong_current = change_password(http, here, "not my passphrase")
    assert wrong_current.status_code == 400
    assert wrong_current.json()["error"] == "invalid_password"

    assert change_password(http, here, PASSWORD).status_code == 204
    assert refresh(http, elsewhere).json()["error"] == "invalid_grant"  # at once
    assert me(http, elsewhere).status_code == 401
    assert me(http, here).status_code == 200  # this session goes on
    assert refresh(http, here).status_code == 200
    notice = stack.smtp.wait_for(here.email, count=2)[-1]
    assert notice.message["Subject"] == "Your Films password was changed"
    assert notice.code is None

    old = http.post("/v1/auth/login", json={"email": here.email, "password": PASSWORD})
    assert old.status_code == 401
    login(stack, http, here.email, NEW_PASSWORD)
    events = [row[0] for row in audit_rows(stack, here.id)]
    assert events[-4:-1] == ["reauth_failed", "password_changed", "login_failed"]
    assert NEW_PASSWORD not in json.dumps(audit_rows(stack, here.id))


def test_wrong_current_passwords_count_toward_the_lockout(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "pw-lockout")
    for _ in range(30):  # the default threshold
        assert change_password(http, account, "guess").json()["error"] == "invalid_password"
    locked = change_password(http, account, PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["error"] == "account_locked"


# -- email ------------------------------------------------------------------------------


def ask_email_change(http: httpx.Client, account: Account, new_email: str) -> httpx.Response:
    return http.post(
        "/v1/auth/email/change",
        json={"new_email": new_email, "password": account.password},
        headers=account.bearer,
    )


def confirm(http: httpx.Client, account: Account, code: str) -> httpx.Response:
    return http.post("/v1/auth/email/change/confirm", json={"code": code}, headers=account.bearer)


def test_email_change_moves_the_account_once_confirmed(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "moving")
    new_email = unique_email("moved")
    accepted = ask_email_change(http, account, new_email)
    assert accepted.status_code == 202
    mail = stack.smtp.wait_for(new_email)[0]
    assert mail.message["Subject"] == "Confirm your new Films email address"
    assert mail.code is not None
    assert me(http, account).json()["email"] == account.email  # nothing changed yet

    assert confirm(http, account, wrong(mail.code)).json()["error"] == "invalid_code"
    pair = confirm(http, account, mail.code)
    assert pair.status_code == 200, pair.text
    moved = Account(new_email, PASSWORD, pair.json()["access_token"], pair.json()["refresh_token"])
    assert moved.sid == account.sid  # the same session, new tokens
    profile = me(http, moved).json()
    assert (profile["email"], profile["email_verified"]) == (new_email, True)
    notice = stack.smtp.wait_for(account.email, count=2)[-1]
    assert notice.message["Subject"] == "Your Films email address was changed"
    assert notice.code is None

    assert (
        http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD}).status_code
        == 401
    )
    login(stack, http, new_email)
    assert confirm(http, moved, mail.code).json()["error"] == "invalid_code"  # single use


def test_a_reset_code_mailed_to_the_old_address_dies_with_the_move(
    stack: Stack, http: httpx.Client
) -> None:
    """Whoever reads the old mailbox (maybe why the address moved) cannot use a reset code
    sent there before the move, with the new address, until it expires."""
    account = cooled_down_account(stack, http, "leaving")
    assert http.post("/v1/auth/password/forgot", json={"email": account.email}).status_code == 202
    reset_code = code_for(stack, account.email, 2)  # after the sign-up's
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    new_email = unique_email("left")
    assert ask_email_change(http, account, new_email).status_code == 202
    change_code = stack.smtp.wait_for(new_email)[0].code
    assert change_code is not None
    assert confirm(http, account, change_code).status_code == 200
    reset = http.post(
        "/v1/auth/password/reset",
        json={"email": new_email, "code": reset_code, "new_password": "taken over at last"},
    )
    assert reset.status_code == 400 and reset.json()["error"] == "invalid_code", reset.text
    login(stack, http, new_email)  # the password is still the owner's


def test_the_pair_an_address_change_replaced_is_refused_without_ending_the_session(
    stack: Stack, http: httpx.Client
) -> None:
    """Another tab of the same client may refresh with the replaced token while the
    change lands. That was taken for a stolen copy: the session ended, the new pair
    with it, and a `refresh_reuse` alarm. A token its holder rotated still does that."""
    account = cooled_down_account(stack, http, "tabs")
    new_email = unique_email("tabs-moved")
    assert ask_email_change(http, account, new_email).status_code == 202
    pair = confirm(http, account, stack.smtp.wait_for(new_email)[0].code or "")
    assert pair.status_code == 200, pair.text
    moved = Account(new_email, PASSWORD, pair.json()["access_token"], pair.json()["refresh_token"])

    assert refresh(http, account).json()["error"] == "invalid_grant"  # the replaced token
    rotated = refresh(http, moved)
    assert rotated.status_code == 200  # the session lives on
    assert me(http, moved).status_code == 200
    assert "refresh_reuse" not in [row[0] for row in audit_rows(stack, account.id)]

    assert refresh(http, moved).json()["error"] == "invalid_grant"  # rotated: a copy
    after_reuse = http.post(
        "/v1/auth/token/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert after_reuse.json()["error"] == "invalid_grant"  # the family ended
    assert "refresh_reuse" in [row[0] for row in audit_rows(stack, account.id)]


def test_a_taken_address_gets_the_same_answer_and_no_code(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "mover")
    other = cooled_down_account(stack, http, "owner")
    free = ask_email_change(http, account, unique_email("free"))
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    taken = ask_email_change(http, account, other.email.upper())
    assert (taken.status_code, taken.text) == (free.status_code, free.text) == (202, free.text)
    # The owner's next email is the reset code asked for now: no email-change code came.
    http.post("/v1/auth/password/forgot", json={"email": other.email})
    mail = stack.smtp.wait_for(other.email, count=2)[-1]
    assert mail.message["Subject"] == "Your Films password reset code"


def test_an_address_taken_before_confirmation_is_refused(stack: Stack, http: httpx.Client) -> None:
    account = cooled_down_account(stack, http, "slow-mover")
    target = unique_email("contested")
    ask_email_change(http, account, target)
    code = code_for(stack, target)
    http.post("/v1/auth/signup", json={"email": target, "password": PASSWORD})  # now taken
    refused = confirm(http, account, code)
    assert refused.status_code == 409
    assert refused.json()["error"] == "email_taken"
    assert me(http, account).json()["email"] == account.email


def test_email_change_refusals(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "refusals")
    same = ask_email_change(http, account, account.email)
    assert (same.status_code, same.json()["error"]) == (400, "email_unchanged")
    bad_password = http.post(
        "/v1/auth/email/change",
        json={"new_email": unique_email(), "password": "not it"},
        headers=account.bearer,
    )
    assert (bad_password.status_code, bad_password.json()["error"]) == (400, "invalid_password")
    no_code_asked = confirm(http, account, "123456")
    assert (no_code_asked.status_code, no_code_asked.json()["error"]) == (400, "invalid_code")
    anonymous = http.post("/v1/auth/email/change/confirm", json={"code": "123456"})
    assert anonymous.status_code == 401


# -- delete -----------------------------------------------------------------------------


def delete_me(http: httpx.Client, account: Account, password: str = PASSWORD) -> httpx.Response:
    return http.request(
        "DELETE", "/v1/auth/me", json={"password": password}, headers=account.bearer
    )


def deliveries(stack: Stack, email: str) -> list[object]:
    admin = Minter(stack.key_dir).token(roles=["admin"])
    r = httpx.get(
        f"{stack.mailer.url}/v1/deliveries", params={"email": email}, headers=bearer(admin)
    )
    assert r.status_code == 200, r.text
    items: list[object] = r.json()["items"]
    return items


def favourites(stack: Stack, headers: dict[str, str]) -> list[object]:
    r = httpx.get(f"{stack.films.url}/v1/me/favourites", headers=headers)
    assert r.status_code == 200, r.text
    items: list[object] = r.json()
    return items


def test_deleting_the_account_removes_its_data_everywhere(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "leaving")
    other_session = login(stack, http, account.email)
    put = httpx.put(f"{stack.films.url}/v1/me/favourites/1", headers=account.bearer)
    assert put.status_code == 204
    assert wait_until(lambda: deliveries(stack, account.email))  # the mailer's history

    wrong_password = delete_me(http, account, "not my passphrase")
    assert (wrong_password.status_code, wrong_password.json()["error"]) == (
        400,
        "invalid_password",
    )
    assert delete_me(http, account).status_code == 204

    again = delete_me(http, account)  # the same, unexpired access token
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_token"
    assert again.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert refresh(http, other_session).json()["error"] == "invalid_grant"
    gone = http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert gone.json()["error"] == "invalid_credentials"

    # Films and the mailer hear user.deleted and forget the user; films also refuses the
    # account's tokens from then on (common/revocations.py), so look with a later one.
    mine = f"{stack.films.url}/v1/me/favourites"
    wait_until(lambda: httpx.get(mine, headers=account.bearer).status_code == 401)
    later = Minter(stack.key_dir).token(sub=account.id, iat=int(time.time()) + 2)
    wait_until(lambda: favourites(stack, bearer(later)) == [])
    wait_until(lambda: deliveries(stack, account.email) == [])
    # The audit trail stays, without the address.
    rows = audit_rows(stack, account.id)
    assert rows[-1][0] == "account_deleted"
    assert {email for _, email, _ in rows} == {None}

    # The address is free again.
    r = http.post("/v1/auth/signup", json={"email": account.email, "password": PASSWORD})
    assert r.status_code == 202
    code = code_for(stack, account.email, count=2)
    assert http.post("/v1/auth/verify", json={"email": account.email, "code": code}).is_success


def test_a_stranger_cannot_delete_without_the_password(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "kept")
    no_body = http.request("DELETE", "/v1/auth/me", headers=account.bearer)
    assert no_body.status_code == 422
    anonymous = http.request("DELETE", "/v1/auth/me", json={"password": PASSWORD})
    assert anonymous.status_code == 401
    assert me(http, account).status_code == 200


def test_an_address_change_asked_too_soon_says_when(stack: Stack, http: httpx.Client) -> None:
    """Within the resend cooldown (here: right after a first change was asked for) the
    caller hears when to ask again, rather than an "accepted" for a code never sent."""
    for _ in range(3):  # a machine so busy that the second ask came after the cooldown
        account = cooled_down_account(stack, http, "hasty")
        asked = time.monotonic()
        assert ask_email_change(http, account, unique_email("hasty-first")).status_code == 202
        new_email = unique_email("hasty-new")
        # Timed up to the second ask's sending, not its answer, which the floor may hold.
        in_time = time.monotonic() - asked < TEST_RESEND_COOLDOWN - 0.5
        early = ask_email_change(http, account, new_email)  # from the first ask, not a delivery
        if early.status_code != 202 or in_time:
            break
    else:
        pytest.fail("the machine never asked twice within the cooldown")
    assert early.status_code == 429, early.text
    assert early.json()["error"] == "rate_limited"
    assert 1 <= int(early.headers["Retry-After"]) <= TEST_RESEND_COOLDOWN
    time.sleep(int(early.headers["Retry-After"]) + 0.2)
    assert ask_email_change(http, account, new_email).status_code == 202
    assert stack.smtp.wait_for(new_email)[0].code is not None
