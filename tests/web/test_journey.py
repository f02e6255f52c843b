"""A person's whole journey through the pages, in a real browser: sign up → the code from
the SMTP server → verify → browse → favourite → change password → log out → log in by
emailed code → delete the account. Every step is checked on the page, as seen."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import TEST_CODE_BUDGET, TEST_RESEND_COOLDOWN
from tests.support import unique_email
from tests.web.conftest import PASSWORD, Web, log_in, new_context, shot

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "another horse battery staple"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def notice(page: Page) -> str:
    return " ".join(page.get_by_role("status").all_inner_texts())


def sign_up(page: Page, web: Web, email: str) -> None:
    page.goto("/")
    shot(page, "home", readme=True)
    page.get_by_role("main").get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    # auth's 422 for the password, in words, beside the field
    expect(page.locator("#password-error")).to_contain_text("Use at least 8 characters.")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Email address")).to_have_value(email)
    page.get_by_label("Password").fill("password123")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#password-error")).to_contain_text("one of the most common ones")
    page.get_by_label("Password").fill(PASSWORD)
    shot(page, "signup", readme=True)
    with page.expect_response(re.compile(r"/verify$")) as verify_page:
        page.get_by_role("button", name="Create account").click()
    # As the server wrote it (app.js changes it once the cooldown is over): the cooldown is
    # shown, and the button waits for it, as auth sends at most one email a cooldown.
    html = verify_page.value.text()
    assert "You can ask for a new code in 2 seconds." in html
    assert re.search(r'<button[^>]*id="resend-button"[^>]*disabled', html)
    expect(page).to_have_url(re.compile(r"/verify$"))
    expect(page.get_by_role("status")).to_contain_text(f"We sent a code to {email}")


def verify(page: Page, web: Web, email: str) -> None:
    expect(page.get_by_label("Email address")).to_have_value(email)
    first = web.stack.smtp.wait_for(email)[-1].code
    assert first is not None
    resend = page.get_by_role("button", name="Send the code again")
    shot(page, "verify", readme=True)
    page.get_by_label("Code from the email").fill(wrong(first))
    page.get_by_role("button", name="Confirm address").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong")
    expect(resend).to_be_enabled(timeout=15_000)  # app.js, once the cooldown is over
    resend.click()
    expect(page.get_by_role("status")).to_contain_text("a new code is on its way")
    code = web.stack.smtp.wait_for(email, count=2)[-1].code
    assert code is not None
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Confirm address").click()
    expect(page).to_have_url(re.compile(r"/films$"))
    expect(page.get_by_role("status")).to_contain_text("Your address is confirmed")


def browse(page: Page) -> str:
    """Search, filter, sort, page; open a film and make it a favourite. Returns its title."""
    shot(page, "films", readme=True)
    count = page.locator(".count")
    expect(count).to_contain_text("films found")
    page.get_by_label("Search titles").fill("godfather")
    page.get_by_role("button", name="Show films").click()
    expect(page).to_have_url(re.compile(r"q=godfather"))
    titles = page.locator(".film-card h2")
    expect(titles.first).to_contain_text("Godfather")
    for title in titles.all_inner_texts():
        assert "godfather" in title.lower()

    page.get_by_role("link", name="Clear filters").click()
    page.get_by_label("Genre").select_option("Crime")
    page.get_by_label("Sort by").select_option("-year")
    page.get_by_role("button", name="Show films").click()
    # all_inner_texts() does not wait: first the new page, with its films.
    expect(page).to_have_url(re.compile(r"sort=-year"))
    expect(page.locator(".film-card .meta").first).to_contain_text("Crime")
    years = [int(y.split(" · ")[0]) for y in page.locator(".film-card .meta").all_inner_texts()]
    assert years and years == sorted(years, reverse=True)
    for meta in page.locator(".film-card .meta").all_inner_texts():
        assert "Crime" in meta

    page.get_by_label("Year").fill("abc")
    page.get_by_role("button", name="Show films").click()
    expect(page.locator("#year-error")).to_contain_text("Enter a year between 1870 and 2100.")

    page.get_by_role("link", name="Clear filters").click()
    expect(page.get_by_text("Page 1 of")).to_be_visible()
    page.get_by_role("link", name="Next page").click()
    expect(page.get_by_text("Page 2 of")).to_be_visible()

    first = page.locator(".film-card h2 a").first
    title = first.inner_text()
    first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    page.get_by_role("button", name="Add to favourites").click()
    expect(page.get_by_role("status")).to_contain_text("Added to your favourites.")
    expect(page.get_by_role("button", name="Remove from favourites")).to_be_visible()
    shot(page, "film", readme=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="My favourites").click()
    expect(page.locator(".film-card h2")).to_have_text([title])
    shot(page, "favourites")
    return title


def change_password(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Account").click()
    shot(page, "account", readme=True)
    page.get_by_role("link", name="Change your password").click()
    page.get_by_label("Current password").fill("not the password")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#current_password-error")).to_contain_text(
        "Your current password is wrong."
    )
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.get_by_role("status")).to_contain_text("Your password is changed.")


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    page.goto("/account")  # the session is gone, not just hidden
    expect(page).to_have_url(re.compile(r"/login\?next=%2Faccount$"))


def log_in_by_code(page: Page, web: Web, email: str) -> None:
    page.get_by_role("link", name="Log in with a code sent by email instead").click()
    page.get_by_label("Email address").fill(email)
    sent = len(web.stack.smtp.to(email))
    page.get_by_role("button", name="Email me a code").click()
    expect(page).to_have_url(re.compile(r"/login/code/verify"))
    expect(page.get_by_label("Email address")).to_have_value(email)
    code = web.next_code(email, after=sent)
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Log in").click()
    # next=/account came along from the page that asked for a login
    expect(page).to_have_url(re.compile(r"/account$"))


def sessions(page: Page) -> None:
    """Logout ended the first session and the password change every other: one is left."""
    page.get_by_role("link", name="Where you are logged in").click()
    cards = page.locator(".session-card")
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".badge")).to_have_text("This browser")
    shot(page, "sessions", readme=True)


def delete_account(page: Page, email: str) -> None:
    page.goto("/account/delete")
    page.get_by_label("Current password").fill(PASSWORD)  # the old one
    page.get_by_role("button", name="Delete my account").click()
    expect(page.locator("#password-error")).to_contain_text("Your current password is wrong.")
    page.get_by_label("Current password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Delete my account").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("status")).to_have_text("Your account is deleted.")
    log_in(page, email, NEW_PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("The email address or the password is wrong.")


def test_sign_up_browse_favourite_change_password_log_in_by_code_delete(
    web: Web, page: Page, identity: None
) -> None:
    email = unique_email("journey")
    sign_up(page, web, email)
    verify(page, web, email)
    browse(page)
    change_password(page)
    log_out(page)
    log_in_by_code(page, web, email)
    sessions(page)
    delete_account(page, email)
    with httpx.Client(timeout=30) as http:
        r = http.post(
            f"{web.stack.auth.url}/v1/auth/login", json={"email": email, "password": NEW_PASSWORD}
        )
    assert r.status_code == 401


def test_log_in_with_a_password_and_come_back_to_the_page_asked_for(web: Web, page: Page) -> None:
    email = web.account("password")
    page.goto("/favourites")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ffavourites$"))
    shot(page, "login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("The email address or the password is wrong.")
    expect(page.get_by_label("Email address")).to_have_value(email)
    expect(page.get_by_label("Password")).to_have_value("")  # never sent back
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/favourites$"))
    expect(page.get_by_text("You have no favourites yet.")).to_be_visible()
    expect(page.get_by_role("contentinfo")).to_contain_text(f"Logged in as {email}")


def test_an_unverified_address_is_sent_to_the_code_page(web: Web, page: Page) -> None:
    email = unique_email("unverified")
    with httpx.Client(timeout=30) as http:
        http.post(
            f"{web.stack.auth.url}/v1/auth/signup", json={"email": email, "password": PASSWORD}
        )
    log_in(page, email)
    expect(page.get_by_role("alert")).to_contain_text("This address is not confirmed yet.")
    page.get_by_role("link", name="Confirm your address with the emailed code").click()
    expect(page.get_by_label("Email address")).to_have_value(email)


def test_forgotten_password(web: Web, page: Page) -> None:
    email = web.account("forgot")
    time.sleep(TEST_RESEND_COOLDOWN)  # auth sends one email an address per cooldown
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Send reset code").click()
    expect(page).to_have_url(re.compile(r"/password/reset$"))
    expect(page.get_by_role("status")).to_contain_text("a reset code is on its way")
    code = web.stack.smtp.wait_for(email, count=2)[-1].code
    assert code is not None
    expect(page.get_by_label("Email address")).to_have_value(email)
    page.get_by_label("Code from the email").fill(wrong(code))
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save new password").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong")
    page.get_by_label("Code from the email").fill(code)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Save new password").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_contain_text("Your password is changed.")
    log_in(page, email, NEW_PASSWORD)
    expect(page).to_have_url(re.compile(r"/films$"))


def test_russian_from_accept_language_and_the_switch(browser: Browser, web: Web) -> None:
    context = new_context(browser, web, locale="ru-RU")  # Accept-Language: ru-RU
    page = context.new_page()
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.get_by_role("heading", level=1)).to_have_text("Вход")
    page.get_by_label("Адрес электронной почты").fill("nobody@example.com")
    page.get_by_label("Пароль").fill("wrong password")
    page.get_by_role("button", name="Войти").click()
    expect(page.get_by_role("alert")).to_contain_text("Неверный адрес почты или пароль.")
    shot(page, "login-ru", readme=True)
    page.get_by_role("navigation", name="Язык").get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.goto("/signup")  # the choice sticks, over Accept-Language
    expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    context.close()


def test_too_many_wrong_codes_say_when_to_try_again(web: Web, page: Page) -> None:
    email = unique_email("budget")
    with httpx.Client(timeout=30) as http:
        r = http.post(
            f"{web.stack.auth.url}/v1/auth/signup", json={"email": email, "password": PASSWORD}
        )
    assert r.status_code == 202
    code = web.stack.smtp.wait_for(email)[-1].code
    assert code is not None
    page.goto("/verify")
    page.get_by_label("Email address").fill(email)
    for _ in range(TEST_CODE_BUDGET):
        page.get_by_label("Code from the email").fill(wrong(code))
        page.get_by_role("button", name="Confirm address").click()
        expect(page.locator("#code-error")).to_contain_text("The code is wrong")
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Confirm address").click()
    expect(page.get_by_role("alert")).to_contain_text(
        re.compile(r"Too many wrong codes for this address\. Try again in \d+ (second|seconds)\.")
    )
    shot(page, "too-many-codes")


def test_ending_a_session_elsewhere_logs_that_browser_out(
    browser: Browser, web: Web, page: Page, identity: None
) -> None:
    email = web.account("two-browsers")
    other = new_context(browser, web).new_page()
    log_in(other, email)
    expect(other).to_have_url(re.compile(r"/films$"))
    log_in(page, email)
    page.goto("/account/sessions")
    cards = page.locator(".session-card")
    # verify's own session (made through the API), the other browser's, and this one
    expect(cards).to_have_count(3)
    expect(cards.first.locator(".badge")).to_have_text("This browser")
    # Most recently used first: the last is the API's, long unused.
    cards.last.get_by_role("button", name="End this session").click()
    expect(page.get_by_role("status")).to_have_text("That session is ended.")
    expect(cards).to_have_count(2)
    other.goto("/account")
    expect(other).to_have_url(re.compile(r"/account$"))
    page.get_by_role("button", name="End every other session").click()
    expect(page.get_by_role("status")).to_have_text("Every other session is ended.")
    expect(cards).to_have_count(1)
    # The other browser's next page needs auth: its session is over, and it is told so.
    other.goto("/account")
    expect(other).to_have_url(re.compile(r"/login\?next=%2Faccount$"))
    expect(other.get_by_role("status")).to_have_text("Your session has ended. Please log in again.")
    other.context.close()


def test_change_the_email_address(web: Web, page: Page, identity: None) -> None:
    email = web.account("moving")
    new_email = unique_email("moved")
    time.sleep(TEST_RESEND_COOLDOWN)  # auth sends one email an account per cooldown
    log_in(page, email)
    page.goto("/account/email")
    page.get_by_label("New email address").fill(email)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Send code to the new address").click()
    expect(page.locator("#new_email-error")).to_have_text("Error: That is your address already.")
    page.get_by_label("New email address").fill(new_email)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Send code to the new address").click()
    expect(page).to_have_url(re.compile(r"/account/email/confirm$"))
    expect(page.get_by_text(f"Enter the code we sent to {new_email}.")).to_be_visible()
    code = web.next_code(new_email, after=0)
    page.get_by_label("Code from the email").fill(wrong(code))
    page.get_by_role("button", name="Confirm new address").click()
    expect(page.locator("#code-error")).to_contain_text("The code is wrong")
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Confirm new address").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.get_by_role("status")).to_have_text("Your email address is changed.")
    expect(page.locator(".facts dd").first).to_have_text(new_email)
    expect(page.get_by_role("contentinfo")).to_contain_text(f"Logged in as {new_email}")
    page.goto("/films")  # the replaced tokens work for the other APIs too
    expect(page.locator(".count")).to_contain_text("films found")
