"""The authorization endpoint's pages in a real browser: an application (Authlib, as a
real OAuth2/OIDC client) sends the person to /oauth/authorize, they sign in and allow it,
and the browser is sent back to the application's redirect URI, whose answer Authlib trades
for tokens at auth. Nothing listens at the redirect URIs: the browser's request for one is
answered here (Playwright's routing), and its URL is the answer."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from playwright.sync_api import Page, Route, expect

from tests.dpop_keys import ProofKey
from tests.integration.test_pushed_requests import request_for, ticket_desk
from tests.support import (
    FIRST_PARTY_REDIRECT,
    PUSHED_REDIRECT,
    PUSHED_SECRET,
    SPA_REDIRECT,
    SPA_SIGNED_OUT,
    SPA_WEB_REDIRECT,
    TEST_ISSUER,
)
from tests.web.conftest import PASSWORD, Web, log_in, shot
from tests.web.test_accessibility import serious_violations

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the stack speaks plain HTTP


class Application:
    """An application registered at auth: it builds the authorization URL, and reads the
    answer the browser brings back to its redirect URI."""

    def __init__(self, web: Web, page: Page, client_id: str, redirect_uri: str) -> None:
        self.web = web
        self.verifier = generate_token(48)
        self.client = OAuth2Session(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope="openid email films",
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        )
        self.answers: list[str] = []
        page.route(f"{redirect_uri}*", self._answer)

    def _answer(self, route: Route) -> None:
        self.answers.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>app</title>signed in")

    def url(self, **extra: str) -> str:
        url, self.state = self.client.create_authorization_url(
            f"{self.web.url}/oauth/authorize", code_verifier=self.verifier, **extra
        )
        return str(url)

    def answer(self) -> dict[str, str]:
        assert len(self.answers) == 1, self.answers
        return {
            name: values[0] for name, values in parse_qs(urlsplit(self.answers[0]).query).items()
        }

    def tokens(self) -> dict[str, Any]:
        token: dict[str, Any] = self.client.fetch_token(
            f"{self.web.stack.auth.url}/v1/auth/token",
            authorization_response=self.answers[0],
            code_verifier=self.verifier,
        )
        return token

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def spa(web: Web, page: Page) -> Iterator[Application]:
    app = Application(web, page, "test-spa", SPA_REDIRECT)
    yield app
    app.close()


@pytest.fixture
def web_spa(web: Web, page: Page) -> Iterator[Application]:
    """The same application, at its https redirect URI (its own site's)."""
    app = Application(web, page, "test-spa", SPA_WEB_REDIRECT)
    yield app
    app.close()


def fill_login(page: Page, email: str) -> None:
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_an_application_signs_a_person_in(web: Web, page: Page, spa: Application) -> None:
    email = web.account("oauth-web")
    page.goto(spa.url(nonce="web-nonce-1", login_hint=email))
    expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth%2Fauthorize"))
    expect(page.get_by_label("Email address")).to_have_value(email)  # OIDC's login_hint
    fill_login(page, email)

    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Film Diary?")
    expect(page.locator("main")).to_contain_text(email)
    expect(page.get_by_text("your email address")).to_be_visible()
    expect(page.get_by_text("access to this site's films and your favourites")).to_be_visible()
    expect(page.get_by_text("You will go back to 127.0.0.1:9.")).to_be_visible()
    assert serious_violations(page) == []
    shot(page, "oauth-consent", readme=True)
    page.get_by_role("button", name="Allow").click()

    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    answer = spa.answer()
    assert answer["state"] == spa.state
    assert answer["iss"] == TEST_ISSUER  # RFC 9207
    token = spa.tokens()
    claims = jwt.decode(token["id_token"], options={"verify_signature": False})
    assert claims["email"] == email and claims["nonce"] == "web-nonce-1"
    assert claims["amr"] == ["pwd"]  # how the person signed in at the web front end

    # The person sees the application's session among theirs, and can end it.
    page.goto(web.url + "/account/sessions")
    card = page.locator(".session-card", has=page.get_by_role("heading", name="Film Diary"))
    expect(card).to_contain_text("An application you allowed to sign you in.")
    card.get_by_role("button", name="End this session").click()
    expect(page.get_by_role("heading", level=2, name="Film Diary")).to_have_count(0)
    with pytest.raises(OAuthError) as ended:
        spa.client.refresh_token(
            f"{web.stack.auth.url}/v1/auth/token", refresh_token=token["refresh_token"]
        )
    assert ended.value.error == "invalid_grant"


def test_the_person_may_say_no(web: Web, page: Page, spa: Application) -> None:
    log_in(page, web.account("oauth-no"))
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto(spa.url())
    page.get_by_role("button", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    answer = spa.answer()
    assert answer["error"] == "access_denied" and answer["state"] == spa.state
    assert "code" not in answer


def test_a_dpop_jkt_in_the_address_binds_the_code(web: Web, page: Page, spa: Application) -> None:
    """The page passes RFC 9449's dpop_jkt on, through the consent form: only a proof by
    that key redeems the code."""
    key = ProofKey()
    log_in(page, web.account("oauth-dpop"))
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto(spa.url(dpop_jkt=key.jkt))
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    with pytest.raises(OAuthError) as refused:
        spa.tokens()
    assert refused.value.error == "invalid_grant"
    token_url = f"{web.stack.auth.url}/v1/auth/token"
    token = spa.client.fetch_token(
        token_url,
        authorization_response=spa.answers[0],
        code_verifier=spa.verifier,
        headers={"DPoP": key.proof("POST", token_url)},
    )
    assert token["token_type"] == "DPoP"
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["cnf"] == {
        "jkt": key.jkt
    }


def test_a_redirect_uri_the_client_did_not_register_goes_nowhere(
    web: Web, page: Page, spa: Application
) -> None:
    """Not even to the registered one: the page says so (RFC 6749 §4.1.2.1). Nor can the
    consent form's hidden fields be changed on the way."""
    url = spa.url().replace("127.0.0.1%3A9", "evil.example")
    assert "evil.example" in url
    reply = page.goto(url)
    assert reply is not None and reply.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link does not work")
    page.goto(web.url + "/oauth/authorize?" + urlencode({"client_id": "nobody"}))
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link does not work")

    log_in(page, web.account("oauth-tamper"))
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto(spa.url())
    page.locator("input[name=redirect_uri]").evaluate(
        "field => { field.value = 'https://evil.example/cb'; }"
    )
    page.get_by_role("button", name="Allow").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link does not work")
    assert spa.answers == []


def test_other_refusals_go_back_to_the_application(web: Web, page: Page, spa: Application) -> None:
    page.goto(spa.url(prompt="none"))  # not signed in, and nothing may be asked
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    assert spa.answer()["error"] == "login_required"

    spa.answers.clear()
    no_pkce = spa.url().replace("code_challenge_method=S256", "code_challenge_method=plain")
    page.goto(no_pkce)
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    assert spa.answer()["error"] == "invalid_request"

    spa.answers.clear()
    page.goto(spa.url() + "&scope=twice")  # a parameter given twice is a page, not a guess
    expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link does not work")


def test_an_application_that_pushes_its_request(web: Web, page: Page) -> None:
    """RFC 9126: the application pushes its request to auth, and sends the browser with
    its client_id and request_uri alone. What else the address says is ignored, the
    consent form carries the request_uri alone, the request gives one code, and the same
    application's request in the address is refused."""
    app = Application(web, page, "test-pushed", PUSHED_REDIRECT)
    auth = web.stack.auth.url
    try:
        email = web.account("oauth-pushed")
        verifier = generate_token(48)
        asked = request_for(
            verifier, state="pushed-state", nonce="pushed-nonce", prompt="login", login_hint=email
        )
        r = httpx.post(f"{auth}/v1/auth/par", data=asked, auth=("test-pushed", PUSHED_SECRET))
        assert r.status_code == 201, r.text
        request_uri = r.json()["request_uri"]
        address = {"client_id": "test-pushed", "request_uri": request_uri}
        link = f"{web.url}/oauth/authorize?" + urlencode(
            address | {"redirect_uri": "https://evil.example/cb", "prompt": "none"}
        )
        page.goto(link)
        expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth%2Fauthorize"))
        expect(page.get_by_label("Email address")).to_have_value(email)  # the pushed hint
        back_to = parse_qs(urlsplit(page.url).query)["next"][0]
        assert set(parse_qs(urlsplit(back_to).query)) == set(address), back_to
        fill_login(page, email)  # prompt=login, met by this sign-in: no second login page

        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Ticket Desk?")
        hidden = page.locator("main form input[type=hidden]")
        names = {hidden.nth(i).get_attribute("name") for i in range(hidden.count())}
        assert names - {"csrf"} == set(address), names
        tab = page.context.new_page()  # the same link in a second tab: one code of the two
        tab.goto(link)
        expect(tab.get_by_role("heading", level=1)).to_have_text("Sign in to Ticket Desk?")
        page.get_by_role("button", name="Allow").click()
        expect(page).to_have_url(re.compile(r"^https://tickets\.example\.test/callback\?"))
        tab.get_by_role("button", name="Allow").click()
        expect(tab.get_by_role("heading", level=1)).to_have_text("This sign-in link has expired")
        tab.close()
        answer = app.answer()
        assert answer["state"] == "pushed-state" and answer["iss"] == TEST_ISSUER
        with ticket_desk() as client:
            token = client.fetch_token(
                f"{auth}/v1/auth/token", code=answer["code"], code_verifier=verifier
            )
        claims = jwt.decode(token["id_token"], options={"verify_signature": False})
        assert claims["nonce"] == "pushed-nonce" and claims["email"] == email

        reply = page.goto(link)  # spent
        assert reply is not None and reply.status == 400
        expect(page.get_by_role("heading", level=1)).to_have_text("This sign-in link has expired")

        # Signed in now, but before this push: its prompt=login sends them to sign in
        # again (auth's check), and then back, allowed before.
        r = httpx.post(f"{auth}/v1/auth/par", data=asked, auth=("test-pushed", PUSHED_SECRET))
        app.answers.clear()
        page.goto(f"{web.url}/oauth/authorize?" + urlencode(
            {"client_id": "test-pushed", "request_uri": r.json()["request_uri"]}))  # fmt: skip
        expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth%2Fauthorize"))
        fill_login(page, email)
        expect(page).to_have_url(re.compile(r"^https://tickets\.example\.test/callback\?"))
        assert "code" in app.answer()
        app.answers.clear()
        page.goto(app.url())  # the request in the address: refused, back to the application
        expect(page).to_have_url(re.compile(r"^https://tickets\.example\.test/callback\?"))
        assert app.answer()["error"] == "invalid_request"
    finally:
        app.close()


def test_prompt_consent_asks_after_a_sign_in_on_the_way_too(
    web: Web, page: Page, web_spa: Application
) -> None:
    """The login page comes back with `prompt=consent` (not with `prompt=login`, met by
    that sign-in): an earlier yes does not stand for it."""
    email = web.account("oauth-consent-again")
    log_in(page, email)
    page.goto(web_spa.url())
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/callback\?"))
    page.context.clear_cookies()  # signed out of the site; the yes is remembered
    page.goto(web_spa.url(prompt="consent"))
    expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth%2Fauthorize"))
    fill_login(page, email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Film Diary?")


def test_a_trusted_application_is_not_asked_about(web: Web, page: Page) -> None:
    """First-party: signing in (a form post) leads straight back to it, through the page
    that moves on (a redirect to another site after a form post would break the pages'
    form-action policy)."""
    app = Application(web, page, "test-first-party", FIRST_PARTY_REDIRECT)
    try:
        page.goto(app.url())
        fill_login(page, web.account("oauth-trusted"))
        expect(page).to_have_url(re.compile(r"^http://localhost:9/signed-in\?"))
        assert "code" in app.answer()
        assert jwt.decode(app.tokens()["access_token"], options={"verify_signature": False})
    finally:
        app.close()


def test_an_application_may_ask_for_a_fresh_sign_in(web: Web, page: Page) -> None:
    """`prompt=login` or a `max_age` the sign-in is older than: the login page first, and
    a link alone signs nobody out. `prompt=consent` asks even for a trusted application."""
    app = Application(web, page, "test-first-party", FIRST_PARTY_REDIRECT)
    try:
        email = web.account("oauth-fresh")
        log_in(page, email)
        expect(page).to_have_url(re.compile(r"/films"))
        for extra in ({"prompt": "login"}, {"max_age": "0"}):
            page.goto(app.url(**extra))
            expect(page).to_have_url(re.compile(r"/login\?next=%2Foauth%2Fauthorize"))
            page.goto(web.url + "/account")  # still signed in
            expect(page).to_have_url(re.compile(r"/account$"))

        page.goto(app.url(max_age="3600"))  # a recent enough sign-in: straight back
        expect(page).to_have_url(re.compile(r"^http://localhost:9/signed-in\?"))
        app.answers.clear()
        page.goto(app.url(prompt="consent"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Films Mobile?")

        page.goto(app.url(prompt="none", max_age="0"))  # too old, and nothing may be asked
        expect(page).to_have_url(re.compile(r"^http://localhost:9/signed-in\?"))
        assert app.answer()["error"] == "login_required"
        app.answers.clear()

        page.goto(app.url(prompt="login"))
        signing_in = int(time.time())
        fill_login(page, email)  # the login page comes back to the request, prompt done
        expect(page).to_have_url(re.compile(r"^http://localhost:9/signed-in\?"))
        claims = jwt.decode(app.tokens()["id_token"], options={"verify_signature": False})
        assert claims["auth_time"] >= signing_in - 1  # this sign-in's, not the first one's
        # Signing in over the earlier session ended it at auth: one browser session left
        # (beside the application's, and the one the account was made with over HTTP).
        page.goto(web.url + "/account/sessions")
        headings = page.locator(".session-card h2")
        expect(headings.filter(has_text="Chrome")).to_have_count(1)
        expect(headings.filter(has_text="Films Mobile")).to_have_count(1)
    finally:
        app.close()


def test_a_yes_is_remembered_until_taken_back(web: Web, page: Page, web_spa: Application) -> None:
    """The application's next sign-in at its https redirect URI asks nothing, unless it
    says `prompt=consent`; the account's Applications page lists what each may do, and
    takes it back: the application is signed out, and must ask again."""
    spa = web_spa
    log_in(page, web.account("oauth-remember"))
    expect(page).to_have_url(re.compile(r"/films"))
    page.goto(spa.url(prompt="none"))  # never asked yet, and nothing may be asked now
    expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/callback\?"))
    assert spa.answer()["error"] == "consent_required"
    spa.answers.clear()
    page.goto(spa.url())
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/callback\?"))
    token = spa.tokens()
    for extra in ({}, {"prompt": "none"}):  # asked nothing the next times
        spa.answers.clear()
        page.goto(spa.url(**extra))
        expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/callback\?"))
        assert "code" in spa.answer(), extra
    page.goto(spa.url(prompt="consent"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Film Diary?")

    page.goto(web.url + "/account")
    page.get_by_role("link", name="Applications you allowed").click()
    card = page.locator(".session-card", has=page.get_by_role("heading", name="Film Diary"))
    expect(card).to_contain_text("your email address")
    expect(card).to_contain_text("access to this site's films and your favourites")
    assert serious_violations(page) == []
    shot(page, "oauth-applications", readme=True)
    card.get_by_role("button", name="Remove access").click()
    expect(page.get_by_role("status")).to_contain_text("The application's access is removed")
    expect(page.get_by_text("You have not allowed any application")).to_be_visible()
    with pytest.raises(OAuthError) as ended:
        spa.client.refresh_token(
            f"{web.stack.auth.url}/v1/auth/token", refresh_token=token["refresh_token"]
        )
    assert ended.value.error == "invalid_grant"
    spa.answers.clear()
    page.goto(spa.url())
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Film Diary?")


def test_an_application_signs_the_person_out(web: Web, page: Page, spa: Application) -> None:
    """OpenID Connect RP-Initiated Logout: the application sends the browser to
    /oauth/logout with its ID token; the person is asked, and "Log out" ends this
    browser's session and the application's, then goes back to the address the
    application registered, with its `state`. "Stay logged in" changes nothing; signed out
    already, the browser goes straight back; an address it did not register goes nowhere."""
    signed_out: list[str] = []

    def answer(route: Route) -> None:
        signed_out.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>app</title>bye")

    page.route(f"{SPA_SIGNED_OUT}*", answer)
    page.goto(spa.url())
    fill_login(page, web.account("oauth-logout-web"))
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:9/callback\?"))
    token = spa.tokens()

    def logout_url(**extra: str) -> str:
        asked = {"id_token_hint": token["id_token"], "post_logout_redirect_uri": SPA_SIGNED_OUT}
        return f"{web.url}/oauth/logout?" + urlencode(asked | extra)

    page.goto(logout_url(post_logout_redirect_uri="https://evil.example/bye"))
    expect(page.get_by_role("heading", level=1)).to_have_text("This logout link does not work")
    # By form post from the application's site (§2), without this site's CSRF token:
    # the same question, and nothing changes.
    posted = page.request.post(
        f"{web.url}/oauth/logout",
        form={"id_token_hint": token["id_token"], "post_logout_redirect_uri": SPA_SIGNED_OUT},
        headers={"Origin": "https://diary.example.test"},
    )
    assert posted.status == 200 and "Log out of Films?" in posted.text()
    page.goto(logout_url(state="s-1"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log out of Films?")
    expect(page.locator("main")).to_contain_text("Film Diary asks to log you out")
    assert serious_violations(page) == []
    page.get_by_role("button", name="Stay logged in").click()
    expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/signed-out\?"))
    assert parse_qs(urlsplit(signed_out.pop()).query) == {"state": ["s-1"]}
    page.goto(web.url + "/account")
    expect(page).to_have_url(re.compile(r"/account$"))  # still logged in

    page.goto(logout_url(state="s-2"))
    page.locator("main").get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"^https://diary\.example\.test/signed-out\?"))
    assert parse_qs(urlsplit(signed_out.pop()).query) == {"state": ["s-2"]}
    page.goto(web.url + "/account")
    expect(page).to_have_url(re.compile(r"/login"))
    with pytest.raises(OAuthError) as ended:
        spa.client.refresh_token(
            f"{web.stack.auth.url}/v1/auth/token", refresh_token=token["refresh_token"]
        )
    assert ended.value.error == "invalid_grant"

    page.goto(logout_url())  # logged out already: nothing to ask, and no state to add
    expect(page).to_have_url(SPA_SIGNED_OUT)
    assert signed_out.pop() == SPA_SIGNED_OUT
