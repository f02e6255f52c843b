"""What a hostile page, link or input tries, in a real browser: a cross-site form post
without the CSRF token, a session that has expired, HTML typed into inputs, and `next=`
links that would leave the site."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from infra.ports import free_port
from tests.web.conftest import Web, log_in, new_context, shot

pytestmark = pytest.mark.e2e

PAYLOAD = '<script>alert("script")</script><img src=x onerror=alert("img")>"\'&'


class Evil:
    """Another origin on this machine (so the same site, and SameSite=Lax cookies go along),
    serving a page that posts a form to the web front end as soon as it loads."""

    def __init__(self, target: str) -> None:
        html = f"""<!doctype html><title>Win a prize</title>
<form id="f" method="post" action="{target}">
  <input name="action" value="add">
</form>
<script>document.getElementById("f").submit()</script>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def evil(web: Web) -> Iterator[Evil]:
    server = Evil(f"{web.url}/films/1/favourite")
    yield server
    server.close()


def record_dialogs(page: Page) -> list[str]:
    """Messages of any alert() the page shows: one would mean injected script ran."""
    dialogs: list[str] = []

    def seen(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    return dialogs


def favourites(page: Page) -> list[str]:
    page.goto("/favourites")
    return page.locator(".film-card h2").all_inner_texts()


def test_a_cross_site_form_post_without_the_token_is_refused(
    web: Web, page: Page, context: BrowserContext, evil: Evil
) -> None:
    log_in(page, web.account("csrf"))
    expect(page).to_have_url(re.compile(r"/films$"))
    page.goto(evil.url)
    expect(page.get_by_role("heading", level=1)).to_have_text("This form could not be accepted")
    assert page.url.startswith(web.url)
    shot(page, "csrf-refused")
    assert favourites(page) == []  # nothing was added

    # From this site, but without the token (a script, a tool): refused all the same.
    answer = context.request.post(f"{web.url}/films/1/favourite", form={"action": "add"})
    assert answer.status == 403
    answer = context.request.post(
        f"{web.url}/films/1/favourite", form={"action": "add", "csrf": "guessed"}
    )
    assert answer.status == 403
    assert favourites(page) == []

    # The page's own form, with its token, works.
    page.goto("/films/1")
    page.get_by_role("button", name="Add to favourites").click()
    expect(page.get_by_role("status")).to_contain_text("Added to your favourites.")
    assert len(favourites(page)) == 1


def test_an_expired_session_asks_to_log_in_again_and_comes_back(web: Web, page: Page) -> None:
    email = web.account("expired")
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/films$"))
    web.expire_sessions()
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Faccount$"))
    expect(page.get_by_role("status")).to_have_text(
        "Your session has expired. Please log in again."
    )
    shot(page, "session-expired")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.get_by_text(email).first).to_be_visible()


def test_html_in_inputs_is_shown_as_text_and_never_runs(web: Web, page: Page) -> None:
    dialogs = record_dialogs(page)

    page.goto("/signup")
    page.get_by_label("Email address").fill(PAYLOAD)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#email-error")).to_contain_text("Enter an email address")
    expect(page.get_by_label("Email address")).to_have_value(PAYLOAD)

    log_in(page, web.account("xss"))
    page.goto(f"/films?q={quote(PAYLOAD)}")
    expect(page.get_by_label("Search titles")).to_have_value(PAYLOAD)
    expect(page.get_by_text("No films match.")).to_be_visible()
    page.goto(f"/admin/deliveries?email={quote(PAYLOAD)}")  # not an admin: refused, escaped
    page.goto(f"/login?next={quote(PAYLOAD)}")

    assert page.locator("img[src=x]").count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert dialogs == []


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        " //evil.example",
        "http:evil.example",
    ],
)
def test_next_never_leaves_the_site(web: Web, context: BrowserContext, target: str) -> None:
    login = context.request.get(f"{web.url}/login", params={"next": target})
    assert 'name="next" value="/films"' in login.text()
    switch = context.request.get(f"{web.url}/lang/ru", params={"next": target}, max_redirects=0)
    assert switch.status == 303
    assert switch.headers["location"] == "/"


def test_after_login_a_hostile_next_lands_on_the_films(web: Web, page: Page) -> None:
    log_in(page, web.account("next"), next=quote("//evil.example/steal"))
    expect(page).to_have_url(f"{web.url}/films")


def test_pages_are_not_framed_and_run_no_inline_script(browser: Browser, web: Web) -> None:
    context = new_context(browser, web)
    page = context.new_page()
    answer = page.goto("/login")
    assert answer is not None
    headers = answer.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"
    # The session cookie: HttpOnly, SameSite=Lax; no token in the browser.
    [cookie] = [c for c in context.cookies() if c["name"] == "session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""
    context.close()


def test_the_user_agent_is_shown_escaped_in_the_sessions_list(
    browser: Browser, web: Web, identity: None
) -> None:
    context = new_context(browser, web, user_agent=PAYLOAD)
    page = context.new_page()
    dialogs = record_dialogs(page)
    log_in(page, web.account("agent"))
    page.goto("/account/sessions")
    expect(page.locator(".session-card h2").first).to_have_text(PAYLOAD)
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []
    context.close()
