"""The JSON error envelope every service answers with: `{"error": <stable code>, "message"}`.

`ApiError` is the HTTP edge's exception: routes raise it (or map their domain errors to it);
nothing below the routes should know about status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.db import DatabaseUnreachable

log = logging.getLogger(__name__)

_STATUS_ERRORS = {
    400: "bad_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ErrorOut(BaseModel):
    """The body of every error answer (OpenAPI's picture of it)."""

    error: str
    message: str


class ApiError(Exception):
    """An HTTP answer with its status and stable machine-readable code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or error)
        self.status = status
        self.error = error
        self.message = message or error.replace("_", " ")
        self.headers = dict(headers) if headers else None


def error_response(
    status: int,
    error: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status, headers=headers)


# The codes the shared edge answers with, for statuses a route names without a code.
GENERIC_ERRORS = {
    400: "malformed_json",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
}


def documented(*answers: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the JSON error envelope and the `error`
    codes it can carry; a bare status means the shared edge's code for it."""
    codes: dict[int, list[str]] = {}
    for answer in answers:
        status, code = answer if isinstance(answer, tuple) else (answer, GENERIC_ERRORS[answer])
        if code not in codes.setdefault(status, []):
            codes[status].append(code)
    return {
        status: {"model": ErrorOut, "description": "`error`: " + " or ".join(codes[status])}
        for status in sorted(codes)
    }


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the rejected input back: it may hold a password or a code.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            return error_response(400, "malformed_json", "request body is not valid JSON")
        return error_response(422, "invalid_request", "request failed validation", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = _STATUS_ERRORS.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else error
        return error_response(exc.status_code, error, message, exc.headers)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not exc.connection_invalidated:
            raise exc  # the app's own handler of the unexpected answers it
        # The connection died under the request (the server restarted, or ended it): the
        # pool has dropped it. Whether the request took effect is unknown (the drop may
        # have come after its commit), so no retry is promised.
        log.warning(
            "database connection lost on %s %s: %s",
            request.method,
            request.url.path,
            type(exc.orig).__name__,
        )
        return error_response(
            503,
            "database_unavailable",
            "the database connection was lost during the request; it may or may not have "
            "taken effect",
        )

    @app.exception_handler(DatabaseUnreachable)
    @app.exception_handler(PoolTimeout)
    async def _no_database(request: Request, exc: Exception) -> JSONResponse:
        # No connection could be had: the server is down or refusing, or every pooled
        # connection stayed busy for the pool's whole timeout.
        log.warning("no database connection for %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "database_unavailable", "the database could not be reached")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
