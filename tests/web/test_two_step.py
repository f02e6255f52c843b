"""Two-step sign-in in a real browser, against the real auth: turning it on from the
account page (the code computed from the secret the page shows, as an authenticator app
would), logging in with the app's code and with recovery codes (each works once), new
recovery codes, wrong codes, a second step that runs out of tries, and turning it off.

auth accepts an app's code only for a 30-second step newer than the last it accepted: a
test that needs two app codes waits for the next step (`next_app_code`) or uses a recovery
code instead.
"""

from __future__ import annotations

import base64
import re
import time

import httpx
import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from playwright.sync_api import Page, expect

from tests.conftest import TEST_RESEND_COOLDOWN
from tests.web.conftest import PASSWORD, Web, log_in, shot
from tests.web.test_accessibility import scrolls_sideways, serious_violations

pytestmark = pytest.mark.e2e

STEP = 30  # seconds: RFC 6238's, which auth and every app use
CODE_TRIES = 5  # auth's AUTH_CODE_MAX_ATTEMPTS: wrong codes one second step allows


def step_now() -> int:
    return int(time.time()) // STEP


def app_code(secret: str, step: int) -> str:
    """What an authenticator app shows for `step`: HMAC-SHA1, 6 digits, 30 s."""
    plain = secret.replace(" ", "").upper()
    key = base64.b32decode(plain + "=" * (-len(plain) % 8))
    totp = TOTP(key, 6, SHA1(), STEP, enforce_key_length=False)  # noqa: S303  # RFC 6238
    return totp.generate(step * STEP).decode()


def next_app_code(secret: str, after: int) -> tuple[str, int]:
    """The code of the first step newer than `after` (auth refuses one of a step already
    used), waiting for that step to begin; and its step."""
    while (step := step_now()) <= after:
        time.sleep(0.5)
    return app_code(secret, step), step


def wrong_app_code(secret: str) -> str:
    """Six digits that are no code the app shows near now, whatever step auth reads."""
    near = {app_code(secret, step_now() + d) for d in range(-3, 4)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def turned_on_through_the_api(web: Web, email: str) -> tuple[str, list[str]]:
    """Two-step sign-in on for the account, as a quicker start than the pages: the secret
    and the recovery codes."""
    auth = web.stack.auth.url
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{auth}/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = http.post(f"{auth}/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=bearer)
        assert r.status_code == 200, r.text
        secret = r.json()["secret"]
        code = app_code(secret, step_now())
        r = http.post(f"{auth}/v1/auth/mfa/totp/confirm", json={"code": code}, headers=bearer)
        assert r.status_code == 200, r.text
    return secret, r.json()["recovery_codes"]


def log_in_through_the_api(web: Web, email: str, code: str) -> httpx.Response:
    """Both steps of a login, through the API: the answer to the second."""
    auth = web.stack.auth.url
    with httpx.Client(timeout=30) as http:
        r = http.post(f"{auth}/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 403 and r.json()["error"] == "mfa_required", r.text
        second = {"mfa_token": r.json()["mfa_token"], "code": code}
        return http.post(f"{auth}/v1/auth/login/mfa", json=second)


def accessible(page: Page) -> None:
    assert serious_violations(page) == [], page.url


def status(page: Page) -> str:
    return " ".join(page.get_by_role("status").all_inner_texts())


def two_step_facts(page: Page) -> str:
    page.goto("/account")
    section = page.get_by_role("region", name="Two-step sign-in")
    return " ".join(section.locator(".facts").inner_text().split())


def second_step(page: Page, email: str, next: str = "") -> None:
    """The password accepted, the page asking for the app's code."""
    log_in(page, email, next=next)
    expect(page).to_have_url(re.compile(r"/login/two-step\?next="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter the code from your app")


def enter_code(page: Page, code: str) -> None:
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Log in").click()


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def test_turn_it_on_and_log_in_with_the_app(web: Web, page: Page) -> None:
    email = web.account("two-step-on")
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films$"))
    assert two_step_facts(page) == "Status Off"
    page.get_by_role("link", name="Turn on two-step sign-in").click()
    accessible(page)
    page.get_by_label("Current password").fill("not the password")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#password-error")).to_contain_text("Your current password is wrong.")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()

    # The QR code and the same secret in groups, for typing in by hand
    expect(page).to_have_url(re.compile(r"/account/two-step/setup$"))
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    secret = page.locator("code.secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})+", secret), secret
    shot(page, "two-step-setup", readme=True)
    accessible(page)
    page.get_by_label("Code from the app").fill(wrong_app_code(secret))
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong.")
    expect(page.locator("code.secret")).to_have_text(secret)  # the same setup, shown again
    used = step_now()
    page.get_by_label("Code from the app").fill(app_code(secret, used))
    page.get_by_role("button", name="Turn on").click()

    # The recovery codes, once
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    expect(page.get_by_role("status")).to_have_text("Two-step sign-in is on.")
    codes = page.locator("ol.recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[a-z0-9]{5}-[a-z0-9]{5}", code) for code in codes), codes
    shot(page, "two-step-recovery-codes")
    accessible(page)
    page.set_viewport_size({"width": 375, "height": 740})
    assert not scrolls_sideways(page)
    page.get_by_role("link", name="I have saved them").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    assert two_step_facts(page) == "Status On Recovery codes left 10"
    page.goto("/account/two-step/setup")  # done: nothing is waiting to be confirmed
    expect(page).to_have_url(re.compile(r"/account/two-step/on$"))

    # Out, and in again: the password, then the app
    log_out(page)
    page.goto("/favourites")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffavourites$"))
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/two-step\?next=%2Ffavourites$"))
    # The token for the second step stays in the session: not in the page, nor its address.
    hidden = page.locator("input[type=hidden]")
    assert sorted(hidden.evaluate_all("inputs => inputs.map(i => i.name)")) == ["csrf", "next"]
    shot(page, "two-step-login")
    accessible(page)
    enter_code(page, wrong_app_code(secret))
    expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    expect(page.get_by_label("Code from your authenticator app")).to_have_value("")
    enter_code(page, app_code(secret, used))  # the step that turned it on: spent
    expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    code, _ = next_app_code(secret, after=used)
    enter_code(page, code)
    expect(page).to_have_url(re.compile(r"/favourites$"))
    expect(page.get_by_role("contentinfo")).to_contain_text(f"Logged in as {email}")


def test_a_recovery_code_logs_in_once(web: Web, page: Page) -> None:
    email = web.account("recovery")
    _, codes = turned_on_through_the_api(web, email)
    second_step(page, email)
    # Case, spaces and hyphens do not matter.
    enter_code(page, codes[0].upper().replace("-", " "))
    expect(page).to_have_url(re.compile(r"/films$"))
    assert two_step_facts(page) == "Status On Recovery codes left 9"
    log_out(page)

    second_step(page, email)
    enter_code(page, codes[0])
    expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    enter_code(page, codes[1])
    expect(page).to_have_url(re.compile(r"/films$"))
    log_out(page)

    # The emailed code is a first step too.
    time.sleep(TEST_RESEND_COOLDOWN)  # auth sends one email an address per cooldown
    page.get_by_role("link", name="Log in with a code sent by email instead").click()
    page.get_by_label("Email address").fill(email)
    sent = len(web.stack.smtp.to(email))
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_label("Code from the email").fill(web.next_code(email, after=sent))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/two-step\?next="))
    enter_code(page, codes[2])
    expect(page).to_have_url(re.compile(r"/films$"))
    assert two_step_facts(page) == "Status On Recovery codes left 7"

    for code in codes[3:7]:  # used elsewhere: three left, and the account page says so
        assert log_in_through_the_api(web, email, code).status_code == 200
    assert two_step_facts(page) == "Status On Recovery codes left 3"
    expect(page.get_by_role("region", name="Two-step sign-in").locator(".warning")).to_have_text(
        "Only 3 recovery codes left. Make new ones so that you cannot be locked out."
    )


def test_new_recovery_codes_replace_the_old_then_turn_it_off(web: Web, page: Page) -> None:
    email = web.account("renew")
    secret, old = turned_on_through_the_api(web, email)
    second_step(page, email)
    enter_code(page, old[0])
    expect(page).to_have_url(re.compile(r"/films$"))

    page.goto("/account")
    page.get_by_role("link", name="Make new recovery codes").click()
    accessible(page)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(wrong_app_code(secret))
    page.get_by_role("button", name="Make new codes").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    accessible(page)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(old[1])
    page.get_by_role("button", name="Make new codes").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
    expect(page.get_by_role("status")).to_contain_text("The old ones no longer work.")
    new = page.locator("ol.recovery-codes code").all_inner_texts()
    assert len(new) == 10 and not set(new) & set(old)
    assert two_step_facts(page) == "Status On Recovery codes left 10"

    refused = log_in_through_the_api(web, email, old[2])  # the old codes no longer work
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_code", refused.text

    page.goto("/account")
    page.get_by_role("link", name="Turn off two-step sign-in").click()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(old[3])
    page.get_by_role("button", name="Turn off").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    page.get_by_label("Current password").fill("not the password")
    page.get_by_label("Code from your authenticator app").fill(new[0])
    page.get_by_role("button", name="Turn off").click()
    expect(page.locator("#password-error")).to_contain_text("Your current password is wrong.")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(new[0])
    page.get_by_role("button", name="Turn off").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.get_by_role("status")).to_have_text("Two-step sign-in is off.")
    assert two_step_facts(page) == "Status Off"

    log_out(page)
    log_in(page, email)  # the password alone again
    expect(page).to_have_url(re.compile(r"/films$"))


def test_too_many_wrong_codes_start_the_login_again(web: Web, page: Page) -> None:
    email = web.account("burned")
    secret, codes = turned_on_through_the_api(web, email)
    second_step(page, email, next="/favourites")
    for _ in range(CODE_TRIES - 1):
        enter_code(page, wrong_app_code(secret))
        expect(page.locator("#code-error")).to_contain_text("The code is wrong or already used.")
    # The last wrong one burns the second step's token: straight back to the login (auth
    # says so in `tries_left`), not one more form that cannot work.
    enter_code(page, wrong_app_code(secret))
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffavourites$"))
    expect(page.get_by_role("status")).to_have_text(
        "The login took too long, or had too many wrong codes. Please log in again."
    )
    # The token is gone from the session: nothing to go on with.
    page.goto("/login/two-step?next=%2Ffavourites")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffavourites$"))
    expect(page.get_by_role("status")).to_have_count(0)

    # A recovery code signs in from a new start.
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    enter_code(page, codes[0])
    expect(page).to_have_url(re.compile(r"/favourites$"))
