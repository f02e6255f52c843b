"""Transparent refresh against the real auth: many requests of one session that all find
its access token expired spend the refresh token once (a second spend would look like theft
to auth and end the session), and a session whose family has ended is over.

The web front end's store and API client run in this process (`run_async`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.db import make_engine, make_sessionmaker, migrate
from tests.web.conftest import PASSWORD, Web, run_async
from web_service import api
from web_service.api import ApiProblem, Backend, Browser, SessionEnded, UserApi, tokens_from
from web_service.config import WebSettings
from web_service.models import Base
from web_service.session_keys import load_sealer
from web_service.sessions import Session, SessionStore, Tokens

pytestmark = pytest.mark.e2e

Test = Callable[[SessionStore, Backend], Awaitable[None]]


def run(web: Web, work: Path, test: Test) -> None:
    async def main() -> None:
        stack = web.stack
        settings = WebSettings(
            auth_url=stack.auth.url,
            films_url=stack.films.url,
            mailer_url=stack.mailer.url,
            database_url=f"sqlite+aiosqlite:///{work}/web.db",
            session_key_path=work / "key",
        )
        engine = make_engine(settings.database_url)
        await migrate(engine, Base)
        backend = Backend(settings)
        try:
            await test(
                SessionStore(make_sessionmaker(engine), load_sealer(settings), settings), backend
            )
        finally:
            await backend.close()
            await engine.dispose()

    run_async(main())


async def signed_in(web: Web, store: SessionStore, email: str) -> tuple[str, Tokens]:
    """(cookie, tokens) of a new session whose access token has just expired."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{web.stack.auth.url}/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
    tokens = tokens_from(r.json())
    tokens.access_expires_at = 0.0
    session = await store.sign_in(store.anonymous(), tokens, "user", {})
    assert session.cookie is not None
    return session.cookie, tokens


def test_parallel_requests_spend_the_refresh_token_once(web: Web, tmp_path: Path) -> None:
    email = web.account("refresh")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, first = await signed_in(web, store, email)
        # As if from several web instances: each loads the session on its own.
        sessions = [await store.load(cookie) for _ in range(6)]
        calls = [
            UserApi(backend, store, s, Browser()).call("auth", "GET", "/v1/auth/me")
            for s in sessions
        ]
        answers = await asyncio.gather(*calls)
        assert [a["email"] for a in answers] == [email] * 6
        final = await store.load(cookie)
        assert final.version == 1 and final.tokens is not None
        assert final.tokens.refresh_token != first.refresh_token
        await assert_family_lives(web, final.tokens)

    run(web, tmp_path, test)


async def assert_family_lives(web: Web, tokens: Tokens) -> None:
    """The login lives on: its newest refresh token refreshes (a token spent twice would
    have ended it)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{web.stack.auth.url}/v1/auth/token/refresh",
            json={"refresh_token": tokens.refresh_token},
        )
    assert r.status_code == 200, r.text


def test_a_slow_refresh_keeps_its_lease(
    web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auth answers a refresh after longer than the lease. The lease used to run out
    under it: another request of the session took it, spent the same refresh token, and
    auth ended the login for reuse. The holder now renews it while its call is in flight;
    the other request waits and takes the new pair."""
    monkeypatch.setattr(api, "REFRESH_LEASE", 1.5)
    email = web.account("slow-refresh")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, first = await signed_in(web, store, email)
        call = backend.call
        spent: list[str] = []
        at_auth = asyncio.Event()

        async def slow_auth(service: str, method: str, path: str, *args: Any, **kw: Any) -> Any:
            if path == "/v1/auth/token/refresh":
                spent.append(kw["json"]["refresh_token"])
                at_auth.set()
                await asyncio.sleep(4.5)  # three leases
            return await call(service, method, path, *args, **kw)

        monkeypatch.setattr(backend, "call", slow_auth)

        async def me(session: Session) -> Any:
            return await UserApi(backend, store, session, Browser()).call(
                "auth", "GET", "/v1/auth/me"
            )

        slow = asyncio.create_task(me(await store.load(cookie)))
        try:
            await asyncio.wait_for(at_auth.wait(), 30)
            answers = [await me(await store.load(cookie)), await slow]
        finally:
            slow.cancel()
        assert [a["email"] for a in answers] == [email] * 2
        assert spent == [first.refresh_token]
        final = await store.load(cookie)
        assert final.version == 1 and final.tokens is not None
        await assert_family_lives(web, final.tokens)

    run(web, tmp_path, test)


def test_a_session_whose_family_ended_is_over(web: Web, tmp_path: Path) -> None:
    email = web.account("ended")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, tokens = await signed_in(web, store, email)
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{web.stack.auth.url}/v1/auth/logout",
                json={"refresh_token": tokens.refresh_token},
            )
        assert r.status_code == 204
        session = await store.load(cookie)
        with pytest.raises(SessionEnded):
            await UserApi(backend, store, session, Browser()).call("auth", "GET", "/v1/auth/me")
        assert not (await store.load(cookie)).stored

    run(web, tmp_path, test)


def test_a_refresh_waits_for_an_address_change_in_another_tab(
    web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address change replaces the session's pair, and auth refuses the old refresh
    token from then on. Another tab refreshing meanwhile spent the old token: a refusal,
    and the web session ended. The change now holds the refresh lease until its pair is
    stored; the other tab waits and takes that pair."""
    email = web.account("replaced")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, tokens = await signed_in(web, store, email)
        changing, other_tab = await store.load(cookie), await store.load(cookie)
        assert changing.tokens is not None and other_tab.tokens is not None
        changing.tokens.access_expires_at = time.time() + 60  # the other tab's has expired
        call, claim = backend.call, store.claim_refresh
        other: list[asyncio.Task[Any]] = []
        waited = asyncio.Event()

        async def claim_refresh(session: Session, lease: float) -> bool:
            if not (claimed := await claim(session, lease)):
                waited.set()
            return claimed

        async def confirm(service: str, method: str, path: str, *args: Any, **kw: Any) -> Any:
            if path != "/confirm":
                return await call(service, method, path, *args, **kw)
            # The other tab's request arrives while the change is at auth.
            api = UserApi(backend, store, other_tab, Browser())
            other.append(asyncio.create_task(api.call("auth", "GET", "/v1/auth/me")))
            await asyncio.wait_for(waited.wait(), 30)  # it found the lease taken
            async with httpx.AsyncClient(base_url=web.stack.auth.url, timeout=30) as http:
                # What the change does at auth: the old token refused, a new pair.
                new = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
                await http.post("/v1/auth/logout", json={"refresh_token": tokens.refresh_token})
            return new.json()

        monkeypatch.setattr(backend, "call", confirm)
        monkeypatch.setattr(store, "claim_refresh", claim_refresh)
        pair = await UserApi(backend, store, changing, Browser()).call_replacing_tokens(
            "auth", "POST", "/confirm"
        )
        assert (await other[0])["email"] == email
        after = await store.load(cookie)
        assert after.tokens is not None
        assert after.tokens.refresh_token == pair["refresh_token"]

    run(web, tmp_path, test)


def test_an_address_change_refused_for_its_access_token_refreshes_once(
    web: Web, tmp_path: Path
) -> None:
    """A 401 to the change (an unexpired token auth refuses) gets one refresh and one
    retry, as any call does, and the lease is released whatever the answer."""
    email = web.account("change-401")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, _ = await signed_in(web, store, email)
        session = await store.load(cookie)
        assert session.tokens is not None
        session.tokens.access_token, session.tokens.access_expires_at = "refused", time.time() + 60
        api = UserApi(backend, store, session, Browser())
        with pytest.raises(ApiProblem) as answer:
            await api.call_replacing_tokens(
                "auth", "POST", "/v1/auth/email/change/confirm", json={"code": "000000"}
            )
        assert answer.value.error == "invalid_code"  # the retry, with the refreshed token
        assert await store.claim_refresh(await store.load(cookie), 1.0)  # released

    run(web, tmp_path, test)


def test_an_address_change_whose_web_session_ended_meanwhile_ends_its_pair(
    web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web session is gone (signed out in another tab, expired) by the time the
    change's new pair comes back: the request ends, and so does the pair's login at auth,
    rather than stay among the account's live sessions with no one holding it."""
    email = web.account("change-orphan")

    async def test(store: SessionStore, backend: Backend) -> None:
        cookie, _ = await signed_in(web, store, email)
        session = await store.load(cookie)
        assert session.tokens is not None
        session.tokens.access_expires_at = time.time() + 60
        call = backend.call
        returned: list[dict[str, Any]] = []

        async def confirm(service: str, method: str, path: str, *args: Any, **kw: Any) -> Any:
            if path != "/confirm":
                return await call(service, method, path, *args, **kw)
            await store.end(await store.load(cookie))  # elsewhere, while the change runs
            async with httpx.AsyncClient(base_url=web.stack.auth.url, timeout=30) as http:
                new = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            returned.append(new.json())
            return returned[-1]

        monkeypatch.setattr(backend, "call", confirm)
        with pytest.raises(SessionEnded):
            await UserApi(backend, store, session, Browser()).call_replacing_tokens(
                "auth", "POST", "/confirm"
            )
        [pair] = returned
        async with httpx.AsyncClient(base_url=web.stack.auth.url, timeout=30) as http:
            r = await http.post(
                "/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]}
            )
        assert r.status_code in (400, 401) and r.json()["error"] == "invalid_grant", r.text

    run(web, tmp_path, test)
