"""The web front end: a backend-for-frontend serving server-rendered pages. Browsers hold
only a session cookie; the API tokens stay in the session store, sealed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from common.db import DatabaseUnreachable, make_engine, make_sessionmaker, migrate_apart
from common.health import Check, database_check, health_router
from common.http import setup_app
from common.logs import setup_logging
from common.memory import give_back_free_memory
from common.tasks import cancel_and_wait
from web_service import (
    account_pages,
    admin_pages,
    auth_pages,
    films_pages,
    oauth_pages,
    passkey_pages,
    two_step_pages,
)
from web_service.api import ApiProblem, Backend, SessionEnded
from web_service.config import WebSettings
from web_service.csrf import CsrfRejected
from web_service.i18n import Translator
from web_service.models import Base
from web_service.pages import NotAdmin, Page, SignInRequired, Web, get_page, return_path
from web_service.security import PublicSchemeMiddleware, SecurityHeadersMiddleware
from web_service.session_keys import load_sealer
from web_service.sessions import SessionStore

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PURGE_EVERY_SECONDS = 600.0


def when(value: str | None) -> str:
    """An API timestamp as people read it, in UTC."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def label(t: Translator, kind: str, value: str) -> str:
    """A value from an API (a genre, a delivery status) in the page's language, if the
    catalogue has it; else as it came."""
    key = f"{kind}.{value}"
    name = t(key)
    return value if name == key else name


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["dict_merge"] = lambda a, b: {**a, **b}
    env.globals["label"] = label
    return env


def auth_check(backend: Backend) -> Check:
    async def check() -> bool:
        await backend.call_health("auth")
        return True

    return check


async def purge_sessions(store: SessionStore) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_SECONDS)
        try:
            if purged := await store.purge():
                log.info("purged %d expired sessions", purged)
        except Exception:  # a database hiccup: try again at the next round
            log.exception("could not purge expired sessions")


def create_app(
    settings: WebSettings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The app; `transport` carries its calls to the APIs (tests give a fake one)."""
    settings = settings or WebSettings()
    sealer = load_sealer(settings)  # fails fast on a missing key in production

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await migrate_apart(engine, Base)
        store = SessionStore(make_sessionmaker(engine), sealer, settings)
        backend = Backend(settings, transport)
        app.state.web = Web(settings, store, backend, templates())
        app.state.checks = {"database": database_check(engine), "auth": auth_check(backend)}
        purging = asyncio.create_task(purge_sessions(store))
        give_back_free_memory()
        try:
            yield
        finally:
            await cancel_and_wait(purging)
            await backend.close()
            await engine.dispose()

    app = FastAPI(
        title="web_service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    setup_app(app, max_body_bytes=settings.max_body_bytes)
    install_error_pages(app)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(PublicSchemeMiddleware, public_origin=settings.public_origin)
    # Outermost: the browser's address (forwarded to auth) and scheme (Secure cookies), from
    # the gateway's X-Forwarded-For/-Proto only.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = (
        auth_pages,
        two_step_pages,
        passkey_pages,
        oauth_pages,
        films_pages,
        account_pages,
        admin_pages,
    )
    for module in pages:
        app.include_router(module.router)
    app.include_router(health_router(lambda: app.state.checks))
    return app


def worker_app() -> FastAPI:
    """The factory each worker process imports when there are several."""
    setup_logging("web")
    return create_app()


async def page_for(request: Request) -> Page:
    page = getattr(request.state, "page", None)
    return page if isinstance(page, Page) else await get_page(request)


async def error_page(request: Request, status: int, title: str, detail: str = "") -> Response:
    try:
        page = await page_for(request)
        return await page.render(
            "error.html",
            status=status,
            title=page.t(title),
            detail=page.t(detail) if detail else "",
        )
    except Exception:  # the session store is down too: a plain page rather than nothing
        log.exception("could not render the error page")
        return HTMLResponse("<!doctype html><title>Error</title><p>Error.</p>", status)


def install_error_pages(app: FastAPI) -> None:
    """HTML answers for what goes wrong, replacing the JSON ones of the APIs."""

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: Exception) -> Response:
        page = await page_for(request)
        if page.session.lapsed:
            page.notice("notice.session_expired")
        return await page.redirect("/login", next=return_path(request))

    @app.exception_handler(SessionEnded)
    async def _ended(request: Request, _: Exception) -> Response:
        page = await page_for(request)
        await page.sign_out()
        page.notice("notice.session_ended")
        return await page.redirect("/login", next=return_path(request))

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: Exception) -> Response:
        log.warning("refused a form post: %s", exc)
        return await error_page(request, 403, "error.csrf.title", "error.csrf.detail")

    @app.exception_handler(NotAdmin)
    async def _not_admin(request: Request, _: Exception) -> Response:
        return await error_page(request, 403, "error.forbidden.title", "error.forbidden")

    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> Response:
        if exc.status == 404:
            return await error_page(request, 404, "error.not_found.title", "error.not_found")
        if exc.status == 403 and exc.error == "mfa_session_required":
            # *_ADMIN_REQUIRES_MFA: this login did not pass two-step sign-in.
            return await error_page(request, 403, "error.forbidden.title", "error.mfa_session")
        if exc.status == 403:
            return await error_page(request, 403, "error.forbidden.title", "error.forbidden")
        if exc.status == 429:
            return await error_page(request, 429, "error.busy.title", "error.rate_limited_page")
        log.warning("unexpected API answer: %s", exc)
        return await error_page(request, 503, "error.unavailable.title", "error.unavailable")

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> Response:
        if not exc.connection_invalidated:
            raise exc  # a page of the unexpected (below)
        log.warning("database connection lost on %s %s", request.method, request.url.path)
        return await error_page(request, 503, "error.unavailable.title", "error.unavailable")

    @app.exception_handler(DatabaseUnreachable)
    @app.exception_handler(PoolTimeout)
    async def _no_database(request: Request, exc: Exception) -> Response:
        log.warning("no database connection for %s %s: %s", request.method, request.url.path, exc)
        return await error_page(request, 503, "error.unavailable.title", "error.unavailable")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, _: Exception) -> Response:
        # Only path and query parameters are declared: a malformed one names no page.
        return await error_page(request, 404, "error.not_found.title", "error.not_found")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return await error_page(request, 404, "error.not_found.title", "error.not_found")
        if exc.status_code == 405:
            return await error_page(request, 405, "error.not_found.title", "error.not_found")
        return await error_page(
            request, exc.status_code, "error.unexpected.title", "error.unexpected"
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return await error_page(request, 500, "error.unexpected.title", "error.unexpected")
