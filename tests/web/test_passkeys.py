"""Passkeys in a real browser, against the real auth: Chromium's virtual authenticator
(the DevTools protocol's WebAuthn domain) stands in for a phone's or a laptop's, and does
what a real one does: it keeps the key, checks the origin and the relying party, and signs.

The pages are opened as http://localhost:<port>, not 127.0.0.1: an IP address cannot be a
relying party's id, so browsers refuse passkeys there; the test stack's auth accepts
passkeys from that origin (tests/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, expect

from tests.web.conftest import PASSWORD, Web, log_in, new_context, shot
from tests.web.test_accessibility import serious_violations
from tests.web.test_journey import log_out
from tests.web.test_two_step import app_code, second_step, step_now, turned_on_through_the_api

pytestmark = pytest.mark.e2e
# A passkey's first request has auth import its checker; a shared CI machine is slow.
expect.set_options(timeout=15_000)


# Chromium's virtual authenticator answers the login page's autofill request at once, with
# no one to pick (the real ones wait for a pick), so a page with autofill on would sign in
# before its button could be pressed. The button's tests run as in a browser that has no
# autofill for passkeys; the autofill's have their own context.
NO_AUTOFILL = "PublicKeyCredential.isConditionalMediationAvailable = async () => false;"


@pytest.fixture
def context(browser: Browser, web: Web) -> Iterator[BrowserContext]:
    """conftest's, opened by name, without passkey autofill."""
    context = new_context(browser, web, base_url=web.named_url)
    context.add_init_script(NO_AUTOFILL)
    yield context
    context.close()


@pytest.fixture
def autofill_page(browser: Browser, web: Web) -> Iterator[Page]:
    """A page whose browser offers passkeys from the address field, and that notes when the
    page asks it to (`window.autofillAsked`)."""
    context = new_context(browser, web, base_url=web.named_url)
    context.add_init_script(
        """{
        const get = navigator.credentials.get.bind(navigator.credentials);
        navigator.credentials.get = (options) => {
          if (options && options.mediation === "conditional") window.autofillAsked = true;
          return get(options);
        };
        }"""
    )
    yield context.new_page()
    context.close()


class Authenticator:
    """A platform authenticator in the page's browser tab: it holds discoverable
    credentials, verifies the user (a fingerprint, say) unless told not to, and needs no
    touch from anyone."""

    def __init__(self, page: Page) -> None:
        self.cdp: CDPSession = page.context.new_cdp_session(page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        options = {
            "protocol": "ctap2",
            "ctap2Version": "ctap2_1",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "automaticPresenceSimulation": True,
        }
        answer = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        self.id = answer["authenticatorId"]

    def verifies_user(self, verified: bool) -> None:
        self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": verified}
        )

    def credentials(self) -> list[dict[str, object]]:
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        credentials: list[dict[str, object]] = answer["credentials"]
        return credentials

    def holds(self, credential: dict[str, object]) -> None:
        """Take a passkey another authenticator made (as a password manager syncs it)."""
        self.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential}
        )


def notice(page: Page) -> str:
    return page.get_by_role("status").inner_text()


def add_passkey(page: Page, name: str, password: str | None = None) -> None:
    """From the account's passkeys page to the page that makes one."""
    page.goto("/account/passkeys")
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Password", exact=True).fill(password or PASSWORD)
    page.get_by_role("button", name="Continue").click()


def passkey_of(browser: Browser, web: Web, name: str) -> tuple[str, dict[str, object]]:
    """A new account with one passkey, added through the pages in a browser of its own: its
    address, and the passkey as its authenticator holds it."""
    context = new_context(browser, web, base_url=web.named_url)
    context.add_init_script(NO_AUTOFILL)
    try:
        page = context.new_page()
        device = Authenticator(page)
        email = web.account(name)
        log_in(page, email)
        expect(page).to_have_url(re.compile(r"/films"))
        add_passkey(page, "Phone")
        page.get_by_role("button", name="Create the passkey").click()
        expect(page.get_by_role("status")).to_contain_text("The passkey is added.")
        (credential,) = device.credentials()
        return email, credential
    finally:
        context.close()


def sign_in_with_passkey(page: Page, next: str = "") -> None:
    page.goto(f"/login?next={next}" if next else "/login")
    page.get_by_role("button", name="Sign in with a passkey").click()


def test_add_a_passkey_sign_in_with_it_and_remove_it(web: Web, page: Page) -> None:
    device = Authenticator(page)
    email = web.account("passkey")
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films"))

    page.goto("/account")
    section = page.get_by_role("region", name="Passkeys")
    expect(section.locator(".facts dd")).to_have_text("0")
    section.get_by_role("link", name="Manage passkeys").click()
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()
    assert serious_violations(page) == []

    add_passkey(page, "  Work   laptop ")
    expect(page.get_by_role("heading", level=1)).to_have_text("Create the passkey")
    assert serious_violations(page) == []
    page.get_by_role("button", name="Create the passkey").click()
    expect(page).to_have_url(re.compile(r"/account/passkeys$"))
    expect(page.get_by_role("status")).to_have_text(
        "The passkey is added. You can sign in with it from now on."
    )
    expect(page.get_by_role("heading", level=2, name="Work laptop")).to_be_visible()
    shot(page, "passkeys", readme=True)
    (made,) = device.credentials()
    assert made["isResidentCredential"] is True
    assert made["rpId"] == "localhost"
    # The owner is told at their address, in case it was not them.
    mail = web.stack.smtp.wait_for(email, count=2)[-1].message
    assert "passkey" in str(mail["Subject"]).lower()

    log_out(page)
    sign_in_with_passkey(page, next="/favourites")
    expect(page).to_have_url(re.compile(r"/favourites$"))
    expect(page.locator(".site-footer")).to_contain_text(email)  # who, from /me
    page.goto("/account/passkeys")
    last_used = page.locator(".session-card .facts dd").nth(1)
    expect(last_used).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$"))

    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_have_text(
        "The passkey is removed. Delete it from your device or password manager too."
    )
    expect(page.get_by_text("You have no passkeys yet.")).to_be_visible()

    # The device still has it; auth no longer takes it.
    log_out(page)
    sign_in_with_passkey(page)
    expect(page).to_have_url(re.compile(r"/login/passkey$"))
    expect(page.locator(".error-summary")).to_contain_text("That passkey was not accepted.")
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Faccount$"))


def test_a_cancelled_passkey_can_be_tried_again(web: Web, page: Page) -> None:
    device = Authenticator(page)
    email = web.account("passkey-again")
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films"))

    add_passkey(page, "Phone", password="not the password")
    expect(page.get_by_text("Your current password is wrong.").first).to_be_visible()

    add_passkey(page, "Phone")
    device.verifies_user(False)  # the fingerprint does not match, or the prompt is closed
    page.get_by_role("button", name="Create the passkey").click()
    error = page.locator("[data-passkey-error]")
    expect(error).to_have_text(
        "No passkey was used: it was cancelled, or took too long. Try again."
    )
    expect(page).to_have_url(re.compile(r"/account/passkeys/new$"))
    assert device.credentials() == []

    device.verifies_user(True)  # the same options, still unspent
    page.get_by_role("button", name="Create the passkey").click()
    expect(page.get_by_role("status")).to_contain_text("The passkey is added.")

    log_out(page)
    device.verifies_user(False)
    sign_in_with_passkey(page)
    expect(page.locator("form[data-passkey] [data-passkey-error]")).to_have_text(
        "No passkey was used: it was cancelled, or took too long. Try again."
    )
    device.verifies_user(True)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(re.compile(r"/films"))


def test_a_passkey_is_both_steps_of_two_step_sign_in(web: Web, page: Page) -> None:
    Authenticator(page)
    email = web.account("passkey-2fa")
    _, recovery = turned_on_through_the_api(web, email)
    second_step(page, email)
    page.get_by_label("Code from your authenticator app").fill(recovery[0])
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/films"))
    add_passkey(page, "Security key")
    page.get_by_role("button", name="Create the passkey").click()
    expect(page.get_by_role("status")).to_contain_text("The passkey is added.")

    log_out(page)
    sign_in_with_passkey(page)
    expect(page).to_have_url(re.compile(r"/films"))  # no code asked for


def test_the_address_field_offers_the_passkey(
    browser: Browser, web: Web, autofill_page: Page
) -> None:
    """Autofill: the login page asks as it opens, the browser offers the passkey among the
    address field's suggestions, and picking it signs in, no button pressed. A passkey that
    auth refuses is said so once: the page saying it asks for no other."""
    page = autofill_page
    email, credential = passkey_of(browser, web, "passkey-autofill")
    Authenticator(page).holds(credential)
    # The virtual authenticator picks at once: the page goes on by itself.
    page.goto("/login?next=/favourites", wait_until="commit")
    expect(page).to_have_url(re.compile(r"/favourites$"))
    expect(page.locator(".site-footer")).to_contain_text(email)

    page.goto("/account/passkeys")
    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_role("status")).to_contain_text("The passkey is removed.")
    page.context.clear_cookies()
    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url.split("/", 3)[3]))
    page.goto("/login", wait_until="commit")
    expect(page).to_have_url(re.compile(r"/login/passkey$"))
    expect(page.locator(".error-summary")).to_contain_text("That passkey was not accepted.")
    expect(page.get_by_label("Email address")).to_have_attribute(
        "autocomplete", "username webauthn"
    )
    page.wait_for_load_state("networkidle")
    asked = [path for path in posted if path.startswith("login")]
    assert asked == ["login", "login/passkey/options", "login/passkey"], posted


def test_the_button_takes_over_from_a_waiting_autofill(
    browser: Browser, web: Web, autofill_page: Page
) -> None:
    """While the autofill request waits for a pick, the browser serves no other: the button
    gives it up first, else the browser would refuse ("a request is already pending")."""
    page = autofill_page
    _, credential = passkey_of(browser, web, "passkey-button")
    page.goto("/login")  # no authenticator yet: the autofill request waits
    # Not page.wait_for_function: its polling evaluates a string, which the pages' CSP
    # refuses (no 'unsafe-eval'); a function passed to evaluate is not such a string.
    deadline = time.monotonic() + 15
    while not page.evaluate("() => window.autofillAsked === true"):
        assert time.monotonic() < deadline, "the page never asked for autofill"
        page.wait_for_timeout(50)
    Authenticator(page).holds(credential)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url.split("/", 3)[3]))
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(re.compile(r"/films"))
    # One request, the button's: had it failed, the autofill would have asked again.
    assert asked[:2] == ["login/passkey/options", "login/passkey"], asked


@pytest.mark.parametrize("browser_lacks", ["script", "passkeys"])
def test_without_a_passkey_capable_browser_the_pages_say_so(
    browser: Browser, web: Web, browser_lacks: str
) -> None:
    """With the script off, or on and in a browser without WebAuthn: no passkey button,
    and words saying why; the rest works."""
    scripted = browser_lacks == "passkeys"
    context = new_context(browser, web, base_url=web.named_url, java_script_enabled=scripted)
    if scripted:
        context.add_init_script("delete window.PublicKeyCredential;")
    try:
        page = context.new_page()
        page.goto("/login")
        expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_hidden()
        log_in(page, web.account("no-passkeys"))
        expect(page).to_have_url(re.compile(r"/films"))
        page.goto("/account/passkeys")
        expect(page.get_by_text("Passkeys need a browser that supports them")).to_be_visible()
        expect(page.get_by_role("button", name="Continue")).to_be_hidden()
    finally:
        context.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_forged_or_broken_answer_is_refused_with_a_page(web: Web, page: Page) -> None:
    """Whatever the `credential` field holds, the answer is a page that says no, never a
    500: not JSON, JSON that is not an object, nesting deeper than any parser goes or than
    an answer does, what JSON may not carry on (NaN, a lone surrogate), and a well-formed
    answer to real options that no authenticator made."""
    page.goto("/login")
    token = page.locator("form[data-passkey=get] [name=csrf]").input_value()
    options = page.request.post("/login/passkey/options", form={"csrf": token})
    assert options.status == 200, options.text()
    challenge = options.json()["publicKey"]["challenge"]
    client_data = {"type": "webauthn.get", "challenge": challenge, "origin": web.named_url}
    forged = {
        "id": b64url(os.urandom(16)),
        "rawId": "",
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(json.dumps(client_data).encode()),
            "authenticatorData": b64url(hashlib.sha256(b"localhost").digest() + b"\x05" + bytes(4)),
            "signature": b64url(os.urandom(70)),
            "userHandle": b64url(os.urandom(16)),
        },
        "clientExtensionResults": {},
    }
    forged["rawId"] = forged["id"]
    for value in (
        "not json",
        "[1, 2]",
        "[" * 15_000,
        '{"id": ' + "[" * 900 + "]" * 900 + "}",
        '{"id": NaN}',
        '{"id": "\\ud800"}',
        json.dumps(forged),
    ):
        page.goto("/login")
        form = page.locator("form[data-passkey=get]")
        form.locator("[name=credential]").evaluate("(field, v) => { field.value = v; }", value)
        with page.expect_navigation():
            form.evaluate("form => form.submit()")
        summary = page.locator(".error-summary")
        expect(summary).to_contain_text("That passkey was not accepted.")
        assert page.title().startswith("Log in")

    # The options for the script come only with this session's form token.
    refused = page.request.post("/login/passkey/options", form={"csrf": "x" * len(token)})
    assert refused.status == 403


def test_an_admin_removes_the_passkeys_of_a_lost_device(web: Web, page: Page) -> None:
    Authenticator(page)
    admin = web.account("passkey-admin")
    web.grant(admin, "admin")
    owner = web.account("passkey-owner")
    log_in(page, owner)
    expect(page).to_have_url(re.compile(r"/films"))
    add_passkey(page, "Stolen phone")
    page.get_by_role("button", name="Create the passkey").click()
    expect(page.get_by_role("status")).to_contain_text("The passkey is added.")
    log_out(page)

    log_in(page, admin)
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto("/admin/users")
    page.get_by_label("Find by email address").fill(owner)
    page.get_by_role("button", name="Find users").click()
    page.get_by_role("link", name=owner).click()
    facts = page.locator(".facts")
    expect(
        facts.locator("dt", has_text="Passkeys").locator("xpath=following-sibling::dd[1]")
    ).to_have_text("1")
    page.get_by_role("button", name="Remove every passkey").click()
    expect(page.get_by_role("status")).to_have_text(
        "Every passkey of this account is removed; its owner was told by email."
    )
    expect(
        facts.locator("dt", has_text="Passkeys").locator("xpath=following-sibling::dd[1]")
    ).to_have_text("0")
    expect(page.get_by_role("button", name="Remove every passkey")).to_have_count(0)
    log_out(page)

    sign_in_with_passkey(page)  # the phone still holds it; auth no longer takes it
    expect(page.locator(".error-summary")).to_contain_text("That passkey was not accepted.")


def test_a_session_that_skipped_the_app_is_told_how_to_add_one(web: Web, page: Page) -> None:
    """The session that turned the app on never passed the second step itself, so auth
    will not let it add a passkey (a lasting second factor): the page says what to do."""
    device = Authenticator(page)
    email = web.account("passkey-skipped")
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto("/account/two-step/on")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    secret = page.locator("code.secret").inner_text()
    page.get_by_label("Code from the app").fill(app_code(secret, step_now()))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("status")).to_have_text("Two-step sign-in is on.")

    add_passkey(page, "Laptop")
    expect(page.locator(".error-summary")).to_contain_text(
        "Your account has two-step sign-in on: log out, log in again"
    )
    assert device.credentials() == []
