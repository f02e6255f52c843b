"""The web app in this process (no APIs behind it): the session cookie's flags over HTTP
and HTTPS, the gateway's forwarded scheme believed only from WEB_TRUSTED_PROXIES, the
security headers, the HTML error pages, and the second step of a login never begun."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from web_service.api import ApiProblem
from web_service.app import create_app
from web_service.config import WebSettings


@asynccontextmanager
async def client(
    tmp_path: Path, base_url: str = "http://testserver", **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        WebSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
            session_key_path=tmp_path / "key",
            auth_url="http://127.0.0.1:9",  # nothing listens: no page here calls an API
            **settings,  # type: ignore[arg-type]
        )
    )
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as http,
    ):
        yield http


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client(tmp_path) as c:
        yield c


async def test_over_http_the_cookie_is_httponly_and_lax(http: httpx.AsyncClient) -> None:
    cookie = (await http.get("/signup")).headers["set-cookie"]
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie


async def test_over_https_the_cookie_is_secure_with_the_host_prefix(tmp_path: Path) -> None:
    async with client(tmp_path, "https://films.example") as https:
        answer = await https.get("/signup")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-session=") and "Secure" in cookie and "HttpOnly" in cookie
    assert answer.headers["strict-transport-security"].startswith("max-age=")


async def test_an_https_public_origin_makes_every_cookie_secure(tmp_path: Path) -> None:
    """Behind a TLS load balancer and a plain-HTTP gateway, the scheme reaching us says
    http; WEB_PUBLIC_ORIGIN says what the browser uses."""
    async with client(tmp_path, public_origin="https://films.example") as http:
        answer = await http.get("/signup", headers={"X-Forwarded-Proto": "http"})
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-session=") and "Secure" in cookie
    assert answer.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize(
    ("trusted", "secure"), [(["10.0.0.0/24"], True), (["10.0.1.7"], False), ([], False)]
)
async def test_the_forwarded_scheme_is_believed_only_from_the_gateway(
    tmp_path: Path, trusted: list[str], secure: bool
) -> None:
    async with client(tmp_path, trusted_proxies=trusted) as http:
        answer = await http.get("/signup", headers={"X-Forwarded-Proto": "https"})
    assert ("Secure" in answer.headers["set-cookie"]) is secure


async def test_security_headers_and_no_caching_of_pages(http: httpx.AsyncClient) -> None:
    page = (await http.get("/login")).headers
    assert page["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page["content-security-policy"]
    assert page["cache-control"] == "no-store"
    static = await http.get("/static/style.css")
    assert static.status_code == 200 and static.headers["cache-control"].startswith("public")
    assert "content-security-policy" in static.headers


async def test_errors_are_pages_not_json(http: httpx.AsyncClient) -> None:
    missing = await http.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Page not found" in missing.text
    refused = await http.post("/signup", data={"email": "a@example.com", "password": "x" * 10})
    assert refused.status_code == 403
    assert "This form could not be accepted" in refused.text
    assert (await http.get("/films")).headers["location"] == "/login?next=%2Ffilms"
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json()["checks"] == {"database": "ok", "auth": "down"}


async def test_unparsable_urls_in_next_and_referer_are_refused_not_a_500(
    http: httpx.AsyncClient,
) -> None:
    """urlsplit raises on an unclosed IPv6 host ("//[x"): such a next, or Referer, is one
    that could leave the site, so it is replaced, as any other would be."""
    for target in ("http://[", "//[x", "http%3A%2F%2F%5B", "%2F%2F%5B"):
        login = await http.get("/login", params={"next": target})
        assert login.status_code == 200, (target, login.status_code)
        assert "%5B" not in login.text and "[" + "x" not in login.text
    signed_out = await http.post("/account/password", headers={"Referer": "http://[::1/"})
    assert signed_out.status_code == 303, signed_out.status_code
    assert signed_out.headers["location"] == "/login?next=%2F"


async def test_the_second_step_of_a_login_never_begun_goes_back_to_the_login(
    http: httpx.AsyncClient,
) -> None:
    """Without a password or emailed code accepted first, the session holds no token for
    the second step: its page sends the visitor to log in, keeping only a safe `next`."""
    asked = await http.get("/login/two-step", params={"next": "/favourites"})
    assert asked.status_code == 303
    assert asked.headers["location"] == "/login?next=%2Ffavourites"
    token = re.search(r'name="csrf" value="([^"]+)"', (await http.get("/login")).text)
    assert token is not None
    form = {"csrf": token[1], "code": "123456", "next": "//evil.example"}
    posted = await http.post("/login/two-step", data=form)
    assert posted.status_code == 303
    assert posted.headers["location"] == "/login?next=%2Ffilms"
    for path in ("/account/two-step/on", "/account/two-step/setup", "/account/two-step/off"):
        assert (await http.get(path)).headers["location"].startswith("/login?next=%2Faccount")


async def test_an_admin_page_refused_for_want_of_two_step_says_so(tmp_path: Path) -> None:
    """With *_ADMIN_REQUIRES_MFA an API refuses a password-only login's admin call with
    `mfa_session_required`: the page says what to do, not just "not allowed"."""
    app = create_app(
        WebSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
            session_key_path=tmp_path / "key",
        )
    )

    async def refused() -> None:
        raise ApiProblem(403, "mfa_session_required", "needs two-step sign-in")

    app.add_api_route("/refused", refused)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        page = await http.get("/refused")
    assert page.status_code == 403
    assert "Admin pages need a login that passed two-step sign-in" in page.text
