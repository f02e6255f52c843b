"""The HTTP edge every service shares: JSON errors with a stable `error` code, a request
body limit, request ids, bearer-token extraction, and Prometheus request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.jwt import InvalidToken, UnknownKey, Verifier
from common.logs import request_id

log = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
)

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


class ApiError(Exception):
    """A domain failure with its HTTP status and stable machine-readable code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or error)
        self.status = status
        self.error = error
        self.message = message or error.replace("_", " ")
        self.headers = headers


def error_response(
    status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status, headers=headers)


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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413 before the app reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int = 64 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", f"body over {self.max_bytes} bytes")
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class MetricsMiddleware:
    """Request latency histogram, as plain ASGI (BaseHTTPMiddleware costs ~1 ms a request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            REQUEST_SECONDS.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Take a well-formed `X-Request-ID` from the caller (a gateway) or make one; it is
    echoed on the response and set for logs and outgoing Kafka headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode("latin-1")
        if not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id.set(rid)

        async def tag(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, tag)
        finally:
            request_id.reset(token)


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(MetricsMiddleware)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def setup_app(app: FastAPI, *, max_body_bytes: int = 64 * 1024) -> None:
    install_error_handlers(app)
    install_metrics(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestIdMiddleware)  # outermost of ours: 4xx answers carry it too


INVALID_TOKEN_HEADERS = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def bearer_claims(request: Request, verifier: Verifier) -> dict[str, Any]:
    """The verified claims of the request's bearer token, or a 401 per RFC 6750."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "invalid_token", "missing bearer token", INVALID_TOKEN_HEADERS)
    try:
        try:
            return verifier.verify(token)
        except UnknownKey:
            # A verifier that can learn keys (JWKS) gets one chance, rate-limited by itself.
            refresh = getattr(verifier, "refresh_unknown", None)
            if refresh is None or not await refresh():
                raise
            return verifier.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", "invalid bearer token", INVALID_TOKEN_HEADERS) from exc


async def request_claims(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the claims, verified by the app's `state.verifier`."""
    return await bearer_claims(request, request.app.state.verifier)


async def admin_claims(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the claims of a token carrying the `admin` role, else 403."""
    claims = await request_claims(request)
    roles = claims.get("roles")
    if not isinstance(roles, list) or "admin" not in roles:
        raise ApiError(403, "forbidden", "this needs the admin role")
    return claims
