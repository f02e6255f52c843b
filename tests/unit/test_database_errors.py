"""What a request answers when the database fails under it: a lost connection (the server
restarted, or ended it) is a 503 with the JSON envelope, which promises no retry (the
request may have taken effect); so is no connection at all (the server refuses, or the
pool stayed busy for its whole timeout); any other database error stays a 500, answered
by the app's own handler of the unexpected (the web's HTML page). None shows the
statement or its values."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common.db import DatabaseUnreachable, make_engine
from common.http import setup_app
from infra.ports import free_port
from web_service.app import create_app
from web_service.config import WebSettings

STATEMENT = "UPDATE users SET password_hash = $1"


def app_failing_with(error: Exception) -> FastAPI:
    app = FastAPI()
    setup_app(app)

    @app.get("/fails")
    async def fails() -> None:
        raise error

    return app


async def get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get("/fails")


def dbapi_error(*, lost: bool) -> DBAPIError:
    orig = ConnectionResetError("connection is closed")
    return DBAPIError(
        STATEMENT, ("secret",), orig, hide_parameters=True, connection_invalidated=lost
    )


async def test_a_lost_connection_answers_503_to_retry() -> None:
    answer = await get(app_failing_with(dbapi_error(lost=True)))
    assert answer.status_code == 503
    assert "retry-after" not in answer.headers
    assert answer.json()["error"] == "database_unavailable"
    assert "secret" not in answer.text and "UPDATE" not in answer.text


async def test_a_database_that_refuses_connections_answers_503() -> None:
    """A real connect to a port where nothing listens: asyncpg's bare OSError is told
    apart from any other I/O error only by where it arose (common/db.py)."""
    engine = make_engine(f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{free_port()}/x")
    app = FastAPI()
    setup_app(app)

    @app.get("/fails")
    async def fails() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        answer = await get(app)
    finally:
        await engine.dispose()
    assert answer.status_code == 503
    assert answer.json() == {
        "error": "database_unavailable",
        "message": "the database could not be reached",
    }
    assert "hunter2" not in answer.text


async def test_a_server_that_closes_at_once_is_unreachable() -> None:
    """A proxy in front of a server that is away accepts, then closes."""

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(8)  # the start-up message's head
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    try:
        with pytest.raises(DatabaseUnreachable):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
        server.close()


async def test_an_untrusted_certificate_stays_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TLS failure is an OSError too, but no reason to try again later."""
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")

    def untrusted(*_: object, **__: object) -> None:
        raise ssl.SSLCertVerificationError("certificate verify failed")

    monkeypatch.setattr(engine.sync_engine.dialect, "connect", untrusted)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_a_pool_that_stayed_busy_answers_503() -> None:
    answer = await get(app_failing_with(PoolTimeout("QueuePool limit of size 10 reached")))
    assert answer.status_code == 503
    assert answer.json()["error"] == "database_unavailable"


async def test_any_other_database_error_is_a_500() -> None:
    answer = await get(app_failing_with(dbapi_error(lost=False)))
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error", "message": "internal server error"}


async def test_the_web_answers_them_with_its_pages(tmp_path: Path) -> None:
    errors: dict[str, tuple[Exception, int]] = {
        "lost": (dbapi_error(lost=True), 503),
        "refused": (DatabaseUnreachable("ConnectionRefusedError"), 503),
        "busy": (PoolTimeout("QueuePool limit of size 10 reached"), 503),
        "other": (dbapi_error(lost=False), 500),
    }
    app = create_app(
        WebSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
            session_key_path=tmp_path / "key",
            auth_url="http://127.0.0.1:9",
        )
    )

    @app.get("/fails/{kind}")
    async def fails(kind: str) -> None:
        raise errors[kind][0]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        for kind, (_, status) in errors.items():
            answer = await http.get(f"/fails/{kind}")
            assert answer.status_code == status, kind
            assert answer.headers["content-type"].startswith("text/html")
            assert "UPDATE" not in answer.text
