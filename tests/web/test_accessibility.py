"""Every main page, checked in the browser: axe-core (vendored, tests/web/vendor/axe-core)
finds no serious or critical violation, with and without errors on the forms; and at phone
width (375 px) nothing scrolls sideways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import DESKTOP, PHONE, Web, log_in, new_context, shot

pytestmark = pytest.mark.e2e

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
SERIOUS = {"serious", "critical"}

PUBLIC = [
    "/",
    "/signup",
    "/verify",
    "/login",
    "/login/code",
    "/login/code/verify",
    "/password/forgot",
    "/password/reset",
    "/no-such-page",
]
SIGNED_IN = [
    "/films",
    "/films?q=the&sort=-year&p=2",
    "/films/1",
    "/favourites",
    "/account",
    "/account/password",
    "/account/email",
    "/account/email/confirm",
    "/account/delete",
    "/account/two-step/on",
    "/account/two-step/off",
    "/account/two-step/recovery-codes",
    "/admin/deliveries",
]
IDENTITY = ["/account/sessions", "/admin/users"]


def serious_violations(page: Page) -> list[dict[str, Any]]:
    # Evaluated through the DevTools protocol, which the page's CSP does not govern.
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE)
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    return [v for v in violations if v["impact"] in SERIOUS]


def scrolls_sideways(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth > window.innerWidth"))


def check(page: Page, path: str) -> None:
    page.set_viewport_size(DESKTOP)
    page.goto(path)
    assert serious_violations(page) == [], path
    page.set_viewport_size(PHONE)
    assert not scrolls_sideways(page), f"{path} scrolls sideways at {PHONE['width']} px"


def submit_empty(page: Page, path: str, button: str) -> None:
    page.goto(path)
    page.get_by_role("button", name=button).click()
    expect(page.get_by_role("alert")).to_be_visible()


def test_public_pages(browser: Browser, web: Web) -> None:
    context = new_context(browser, web)
    page = context.new_page()
    for path in PUBLIC:
        check(page, path)
    # The forms with their errors shown
    for path, button in [
        ("/signup", "Create account"),
        ("/login", "Log in"),
        ("/verify", "Confirm address"),
        ("/password/reset", "Save new password"),
    ]:
        submit_empty(page, path, button)
        assert serious_violations(page) == [], f"{path} with errors"
        assert not scrolls_sideways(page)
    page.set_viewport_size(PHONE)
    page.goto("/login")
    shot(page, "login-phone")
    context.close()


def admin(web: Web) -> str:
    email = web.account("admin")
    web.grant(email, "admin")
    return email


def test_signed_in_pages(browser: Browser, web: Web) -> None:
    context = new_context(browser, web)
    page = context.new_page()
    email = admin(web)
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films$"))
    for path in SIGNED_IN:
        check(page, path)
    for path, button in [
        ("/account/password", "Change password"),
        ("/account/email", "Send code to the new address"),
        ("/account/delete", "Delete my account"),
        ("/account/two-step/on", "Continue"),
        ("/account/two-step/off", "Turn off"),
    ]:
        submit_empty(page, path, button)
        assert serious_violations(page) == [], f"{path} with errors"

    # The delivery history of the admin's own address (the sign-up code)
    page.set_viewport_size(DESKTOP)
    page.goto("/admin/deliveries")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Show deliveries").click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text("Address confirmation code")
    expect(row).to_contain_text("Sent")
    assert serious_violations(page) == []
    shot(page, "admin-deliveries", readme=True)
    page.set_viewport_size(PHONE)
    assert not scrolls_sideways(page)

    page.goto("/films")
    shot(page, "films-phone", readme=True)
    context.close()


def test_pages_of_the_account_endpoints(browser: Browser, web: Web, identity: None) -> None:
    context = new_context(browser, web)
    page = context.new_page()
    log_in(page, admin(web))
    expect(page).to_have_url(re.compile(r"/films$"))
    for path in IDENTITY:
        check(page, path)
    page.set_viewport_size(DESKTOP)
    page.goto("/admin/users")
    page.locator("tbody a").first.click()
    assert serious_violations(page) == []
    page.set_viewport_size(PHONE)
    assert not scrolls_sideways(page)
    context.close()


def test_a_non_admin_sees_no_admin_pages(browser: Browser, web: Web) -> None:
    context = new_context(browser, web)
    page = context.new_page()
    log_in(page, web.account("plain"))
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    page.goto("/admin/deliveries")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    # and the mailer would refuse the token anyway
    token_check = httpx.get(f"{web.stack.mailer.url}/v1/deliveries?email=a@example.com")
    assert token_check.status_code == 401
    context.close()
