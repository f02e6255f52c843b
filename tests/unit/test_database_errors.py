"""What a request answers when the database fails under it: a lost connection (the server
restarted, or ended it) is a 503 with the JSON envelope, which promises no retry (the
request may have taken effect); any other database error stays a 500, answered by the
app's own handler of the unexpected (the web's HTML page). Neither shows the statement
or its values."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from common.http import setup_app
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


async def test_any_other_database_error_is_a_500() -> None:
    answer = await get(app_failing_with(dbapi_error(lost=False)))
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error", "message": "internal server error"}


@pytest.mark.parametrize(("lost", "status"), [(True, 503), (False, 500)])
async def test_the_web_answers_them_with_its_pages(tmp_path: Path, lost: bool, status: int) -> None:
    app = create_app(
        WebSettings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/web.db",
            session_key_path=tmp_path / "key",
            auth_url="http://127.0.0.1:9",
        )
    )

    @app.get("/fails")
    async def fails() -> None:
        raise dbapi_error(lost=lost)

    async with app.router.lifespan_context(app):
        answer = await get(app)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert "UPDATE" not in answer.text
