"""Auth rate-limits and audits by client address; behind the web front end every request
comes from the web service, so it forwards the browser's address. Auth believes it only
from the addresses in AUTH_TRUSTED_PROXIES: with WEB_SOURCE_ADDRESS the web service calls
from an address of its own, which auth can trust while every other local process is not."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from tests.support import unique_email
from tests.web.conftest import PASSWORD, Web, run_async
from web_service.api import Backend, Browser
from web_service.config import WebSettings

pytestmark = pytest.mark.e2e

BROWSER = Browser("203.0.113.7", "Mozilla/5.0 (test)")


def sign_up_from(source: str, auth_url: str, email: str) -> None:
    async def call() -> None:
        backend = Backend(WebSettings(auth_url=auth_url, source_address=source))
        try:
            body = {"email": email, "password": PASSWORD}
            await backend.call("auth", "POST", "/v1/auth/signup", BROWSER, json=body)
        finally:
            await backend.close()

    run_async(call())


def test_auth_believes_the_forwarded_address_only_from_the_web_service(web: Web) -> None:
    name = f"auth-trusting-{uuid.uuid4().hex[:6]}"
    auth = web.stack.spawn("auth_service", name, AUTH_TRUSTED_PROXIES="127.0.0.10")
    try:
        trusted, other = unique_email("trusted"), unique_email("other")
        sign_up_from("127.0.0.10", auth.url, trusted)
        sign_up_from("127.0.0.11", auth.url, other)
    finally:
        auth.stop()
    with sqlite3.connect(web.stack.work / f"{name}.db") as db:
        ips = dict(db.execute("SELECT email, ip FROM audit_events WHERE event = 'signup'"))
    assert ips[trusted] == BROWSER.ip
    assert ips[other] == "127.0.0.11"  # a process elsewhere cannot choose its address
