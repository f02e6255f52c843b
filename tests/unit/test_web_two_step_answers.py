"""The web pages of two-step sign-in and passkeys against answers a live auth gives only
in rare states (an app sealed under a replaced secret, an account disabled mid-login, a
confirmation whose answer was lost, a setup left open, an auth from before passkeys, one
that cannot say who a passkey signed in): the real web app, auth faked at the
transport."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from web_service import two_step_pages
from web_service.app import create_app
from web_service.config import WebSettings

Answer = Callable[[dict[str, Any]], httpx.Response]
ME, SOMEONE = str(uuid.uuid4()), str(uuid.uuid4())


def _pair(sub: str, roles: tuple[str, ...] = ()) -> dict[str, Any]:
    claims = {"sub": sub, "roles": list(roles), "exp": int(time.time()) + 600}
    return {
        "access_token": jwt.encode(claims, "k" * 32, "HS256"),
        "refresh_token": f"r-{sub}",
        "token_type": "Bearer",
        "expires_in": 600,
    }


class FakeAuth:
    """Auth's answers, by path; `answers` overrides one for a test."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        path = request.url.path
        if path in self.answers:
            return self.answers[path](body)
        if path == "/v1/auth/login":
            mfa = {"error": "mfa_required", "mfa_token": "TOKEN", "expires_in": 300}
            return httpx.Response(403, json=mfa)
        if path == "/v1/auth/mfa/totp":
            uri = "otpauth://totp/F:a?secret=JBSWY3DPEHPK3PXP&issuer=F"
            return httpx.Response(200, json={"secret": "JBSWY3DPEHPK3PXP", "otpauth_uri": uri})
        if path == "/v1/auth/me":
            me = {
                "id": ME,
                "email": "a@example.com",
                "email_verified": True,
                "roles": ["admin"],
                "created_at": "2026-01-01T00:00:00+00:00",
            }
            return httpx.Response(200, json=me)
        if path == "/v1/auth/mfa":
            return httpx.Response(200, json={"totp": True, "recovery_codes_left": 10})
        if path == "/v1/auth/passkeys":
            return httpx.Response(200, json={"items": []})
        if path.startswith("/v1/admin/users/"):
            user = {
                "id": path.rsplit("/", 1)[1],
                "email": "someone@example.com",
                "email_verified": True,
                "roles": ["admin"],
                "created_at": "2026-01-01T00:00:00+00:00",
                "disabled": False,
                "disabled_at": None,
                "mfa": True,
            }
            return httpx.Response(200, json=user)
        return httpx.Response(204)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeAuth]]:
    auth = FakeAuth()
    settings = WebSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db", session_key_path=tmp_path / "key"
    )
    app = create_app(settings, transport=httpx.MockTransport(auth))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield http, auth


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:300]
    return found[1]


async def _at_the_second_step(http: httpx.AsyncClient) -> str:
    login = await http.get("/login")
    form = {"csrf": _csrf(login.text), "email": "a@example.com", "password": "pw", "next": "/"}
    first = await http.post("/login", data=form)
    assert first.headers["location"].startswith("/login/two-step")
    return _csrf((await http.get(first.headers["location"])).text)


async def _second_step_answered(
    http: httpx.AsyncClient, auth: FakeAuth, status: int, error: str
) -> httpx.Response:
    """The page the second step leads to when auth answers it with `status` `error`."""
    token = await _at_the_second_step(http)
    auth.answers["/v1/auth/login/mfa"] = lambda _: httpx.Response(
        status, json={"error": error, "message": "x"}
    )
    return await http.post("/login/two-step", data={"csrf": token, "code": "123456"})


async def _signed_in(http: httpx.AsyncClient, auth: FakeAuth, sub: str = ME) -> None:
    auth.answers["/v1/auth/login/mfa"] = lambda _: httpx.Response(200, json=_pair(sub, ("admin",)))
    token = await _at_the_second_step(http)
    done = await http.post("/login/two-step", data={"csrf": token, "code": "123456"})
    assert done.status_code == 303, done.text


async def test_an_app_that_cannot_be_checked_says_what_still_works(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    page = await _second_step_answered(*site, 503, "mfa_unavailable")
    assert page.status_code == 400
    assert "Enter one of your recovery codes instead" in page.text


async def test_an_account_disabled_mid_login_goes_back_to_the_login_and_says_so(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    http, _ = site
    page = await _second_step_answered(*site, 403, "account_disabled")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert "This account is disabled" in (await http.get(page.headers["location"])).text


async def test_a_confirmation_whose_answer_was_lost_points_to_new_codes(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    """The first try turned it on but its answer (the codes) never came back; the second
    is told it is on already: the page must not pass over the codes in silence."""
    http, auth = site
    await _signed_in(http, auth)
    on = await http.get("/account/two-step/on")
    started = await http.post(
        "/account/two-step/on", data={"csrf": _csrf(on.text), "password": "pw"}
    )
    assert started.headers["location"] == "/account/two-step/setup"
    setup = await http.get("/account/two-step/setup")
    auth.answers["/v1/auth/mfa/totp/confirm"] = lambda _: httpx.Response(
        409, json={"error": "mfa_already_enabled", "message": "x"}
    )
    again = await http.post(
        "/account/two-step/setup", data={"csrf": _csrf(setup.text), "code": "123456"}
    )
    assert again.headers["location"] == "/account"
    assert "If you did not save your recovery codes" in (await http.get("/account")).text


async def test_a_setup_left_open_stops_showing_the_secret(
    site: tuple[httpx.AsyncClient, FakeAuth], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, auth = site
    await _signed_in(http, auth)
    monkeypatch.setattr(two_step_pages, "SETUP_SECONDS", -1)  # already past
    on = await http.get("/account/two-step/on")
    await http.post("/account/two-step/on", data={"csrf": _csrf(on.text), "password": "pw"})
    setup = await http.get("/account/two-step/setup")
    assert setup.headers["location"] == "/account/two-step/on"
    assert "JBSWY3DP" not in (await http.get("/account/two-step/on")).text


async def test_an_admin_is_offered_no_button_for_their_own_second_step(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    http, auth = site
    await _signed_in(http, auth)
    own = await http.get(f"/admin/users/{ME}")
    assert own.status_code == 200
    assert "Turn off two-step sign-in" not in own.text
    other = await http.get(f"/admin/users/{SOMEONE}")
    assert "Turn off two-step sign-in" in other.text


async def test_an_auth_without_passkeys_leaves_the_account_page_standing(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    http, auth = site
    await _signed_in(http, auth)
    with_them = await http.get("/account")
    assert with_them.status_code == 200 and "Manage passkeys" in with_them.text
    auth.answers["/v1/auth/passkeys"] = lambda _: httpx.Response(404, json={"error": "not_found"})
    without = await http.get("/account")
    assert without.status_code == 200, without.text
    assert "Manage passkeys" not in without.text and "Two-step sign-in" in without.text


async def test_a_passkey_sign_in_stands_when_auth_cannot_say_whose(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    """The pair is kept even when the address (for the footer) cannot be had right now."""
    http, auth = site
    auth.answers["/v1/auth/login/passkey"] = lambda _: httpx.Response(200, json=_pair(ME))
    auth.answers["/v1/auth/me"] = lambda _: httpx.Response(503, json={"error": "unavailable"})
    token = _csrf((await http.get("/login")).text)
    answer = {"csrf": token, "credential": '{"id": "x"}', "next": "/favourites"}
    done = await http.post("/login/passkey", data=answer)
    assert done.status_code == 303 and done.headers["location"] == "/favourites"
    del auth.answers["/v1/auth/me"]
    assert (await http.get("/account")).status_code == 200  # signed in


async def test_refused_options_reach_the_script_as_words_and_a_wait(
    site: tuple[httpx.AsyncClient, FakeAuth],
) -> None:
    http, auth = site
    limited = {"error": "rate_limited", "message": "x"}
    auth.answers["/v1/auth/login/passkey/options"] = lambda _: httpx.Response(
        429, json=limited, headers={"Retry-After": "17"}
    )
    token = _csrf((await http.get("/login")).text)
    refused = await http.post("/login/passkey/options", data={"csrf": token})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "17"
    assert refused.json() == {
        "error": "rate_limited",
        "message": "Too many attempts. Try again in 17 seconds.",
    }
