"""Admin pages against auth's admin API: find a user, disable and enable them (a disabled
account cannot log in, and the page says so), set roles, refuse a malformed role."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import PASSWORD, Web, log_in, new_context, shot
from tests.web.test_two_step import turned_on_through_the_api

pytestmark = pytest.mark.e2e


def test_find_disable_enable_and_set_roles(
    browser: Browser, web: Web, page: Page, identity: None
) -> None:
    admin = web.account("admin")
    web.grant(admin, "admin")
    user = web.account("managed")
    log_in(page, admin)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.get_by_label("Find by email address").fill(user.split("@")[0])
    page.get_by_role("button", name="Find users").click()
    expect(page.locator(".count")).to_have_text("1 user")
    shot(page, "admin-users", readme=True)
    page.get_by_role("link", name=user).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(user)

    page.get_by_role("button", name="Disable this account").click()
    expect(page.get_by_role("status")).to_contain_text("The account is disabled")
    expect(page.get_by_role("button", name="Enable this account")).to_be_visible()

    other = new_context(browser, web).new_page()
    log_in(other, user)
    expect(other.get_by_role("alert")).to_contain_text("This account is disabled.")

    page.get_by_role("button", name="Enable this account").click()
    expect(page.get_by_role("status")).to_contain_text("The account is enabled.")
    log_in(other, user)
    expect(other).to_have_url(re.compile(r"/films$"))
    other.context.close()

    page.get_by_label("Roles").fill("Bad Role!")
    page.get_by_role("button", name="Save roles").click()
    expect(page.locator("#roles-error")).to_contain_text("is not a valid role")
    page.get_by_label("Roles").fill("editor, reviewer")
    page.get_by_role("button", name="Save roles").click()
    expect(page.get_by_role("status")).to_have_text("Roles saved.")
    expect(page.locator(".facts")).to_contain_text("editor, reviewer")

    # An admin cannot lock themselves out: the refusal is shown in words.
    page.goto("/admin/users")
    page.get_by_label("Find by email address").fill(admin)
    page.get_by_role("button", name="Find users").click()
    page.get_by_role("link", name=admin).click()
    page.get_by_role("button", name="Disable this account").click()
    expect(page.get_by_role("alert")).to_contain_text("You cannot disable your own account")

    # Query strings no form would send: a page, never a 500 or a 503.
    for path, status in [
        ("/admin/users?q=%00&p=%C2%B2", 200),  # NUL, which auth refuses; a "²" page
        ("/admin/users?p=1" + "0" * 5000, 200),
        ("/films?year=%E2%91%A0&p=%C2%B2", 400),  # "①": the year is refused in words
    ]:
        response = page.goto(path)
        assert response is not None and response.status == status, (path, response)


def test_turn_off_two_step_sign_in_for_someone_locked_out(
    web: Web, page: Page, identity: None
) -> None:
    """The owner lost the app and the recovery codes: the admin turns it off, and the
    password alone logs them in again."""
    admin = web.account("admin")
    web.grant(admin, "admin")
    user = web.account("lost-phone")
    turned_on_through_the_api(web, user)
    log_in(page, admin)
    page.goto("/admin/users")
    page.get_by_label("Find by email address").fill(user)
    page.get_by_role("button", name="Find users").click()
    page.get_by_role("link", name=user).click()
    facts = page.locator(".facts")
    expect(facts).to_contain_text("Two-step sign-in")
    expect(facts).to_contain_text("On")
    page.get_by_role("button", name="Turn off two-step sign-in").click()
    expect(page.get_by_role("status")).to_contain_text("Two-step sign-in is off for this account")
    expect(page.get_by_role("button", name="Turn off two-step sign-in")).to_have_count(0)
    expect(facts).to_contain_text("Off")
    with httpx.Client(timeout=30) as http:
        answer = http.post(
            f"{web.stack.auth.url}/v1/auth/login", json={"email": user, "password": PASSWORD}
        )
    assert answer.status_code == 200, answer.text
