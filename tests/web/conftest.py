"""Browser tests: the real stack (broker, SMTP server, auth, films, mailer) plus
`python -m web_service` as a process, driven by Debian's Chromium through Playwright.

One browser for the session, a fresh context (cookies, storage) per test. Screenshots go
to `artifacts/web/` (git-ignored), one per step worth seeing and one of the page a test
failed on; with UPDATE_SCREENSHOTS=1 the README's screenshots (`docs/screenshots/`) are
made again too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.support import ROOT, ServiceProcess, service_missing, unique_email, wait_until

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Without the networking flags Chromium dials Google services, which this machine's
# closed network refuses loudly; the rest make a headless run quiet and deterministic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts" / "web"
README_SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 375, "height": 740}


@dataclass
class Web:
    process: ServiceProcess
    stack: Stack
    database: Path

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def named_url(self) -> str:
        """The same, by name: where passkeys work (auth accepts them from this origin)."""
        return f"http://localhost:{self.process.port}"

    def expire_sessions(self) -> None:
        """Every stored session runs out now, as if its idle time had passed."""
        with sqlite3.connect(self.database) as db:
            db.execute("UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00.000000'")

    def account(self, tag: str = "user", password: str = PASSWORD) -> str:
        """A verified account made through the API (quicker than through pages)."""
        email = unique_email(tag)
        auth = self.stack.auth.url
        with httpx.Client(timeout=30) as http:
            r = http.post(f"{auth}/v1/auth/signup", json={"email": email, "password": password})
            assert r.status_code == 202, r.text
            code = self.stack.smtp.wait_for(email)[-1].code
            r = http.post(f"{auth}/v1/auth/verify", json={"email": email, "code": code})
            assert r.status_code == 200, r.text
        return email

    def next_code(self, email: str, after: int) -> str:
        """The code in the first email with one among those after the `after`th (notices,
        which carry none, may come in between)."""

        def found() -> str | None:
            codes = [m.code for m in self.stack.smtp.to(email)[after:] if m.code]
            return codes[0] if codes else None

        code: str = wait_until(found, 60)  # two test workers share a noisy machine
        return code

    def grant(self, email: str, role: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "auth_service", "roles", "grant", email, role],
            cwd=ROOT,
            env=self.stack.auth.env,
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def web(stack: Stack) -> Iterator[Web]:
    database = stack.work / "web.db"
    env = {
        "WEB_AUTH_URL": stack.auth.url,
        "WEB_FILMS_URL": stack.films.url,
        "WEB_MAILER_URL": stack.mailer.url,
        "WEB_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "WEB_SESSION_KEY_PATH": str(stack.work / "web_session_key"),
        "WEB_RESEND_COOLDOWN_SECONDS": str(TEST_RESEND_COOLDOWN),
    }
    process = ServiceProcess("web_service", "WEB_PORT", env, stack.work, port=stack.web_port)
    process.start()
    try:
        yield Web(process, stack, database)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def identity(stack: Stack) -> None:
    """Auth's account endpoints (issue #11): login by code, sessions, account changes, admin."""
    paths = httpx.get(f"{stack.auth.url}/openapi.json", timeout=10).json()["paths"]
    if "/v1/auth/login/code" not in paths or "/v1/admin/users" not in paths:
        service_missing("auth's account endpoints (#11)", "this auth has no /v1/auth/login/code")


# Playwright and the browser last one module: Playwright's sync API keeps an event loop
# running in the main thread while it is open, and an async test after it (in the same
# xdist worker, which runs whole modules: `--dist loadfile`) could not start its own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        service_missing("Chromium", f"{CHROMIUM} not found; infra/system-packages.sh installs it")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


def new_context(browser: Browser, web: Web, **options: Any) -> BrowserContext:
    options.setdefault("viewport", DESKTOP)
    options.setdefault("locale", "en-GB")
    options.setdefault("base_url", web.url)
    context = browser.new_context(**options)
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def context(browser: Browser, web: Web) -> Iterator[BrowserContext]:
    context = new_context(browser, web)
    yield context
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = context.new_page()
    yield page
    if request.node.stash.get(FAILED, False):
        shot(page, f"FAILED-{request.node.name}")


def shot(page: Page, name: str, readme: bool = False) -> None:
    """A screenshot in artifacts/web/; README ones also in docs/screenshots/ when
    UPDATE_SCREENSHOTS=1."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    if readme and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SHOTS / f"{name}.png")


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on an event loop in a thread of its own: Playwright's sync API keeps a
    loop running in the main thread while a module of browser tests runs."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main).result()


def log_in(page: Page, email: str, password: str = PASSWORD, next: str = "") -> None:
    page.goto(f"/login?next={next}" if next else "/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
