"""Plain-ASGI middlewares every service runs: a request body limit and request ids.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs about 1 ms a request.
"""

from __future__ import annotations

import contextlib
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import error_response
from common.logs import request_id


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413: at once where Content-Length says
    so, else (a chunked body) as soon as the app has read more than that."""

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
        received, exceeded, answered = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # A framework may catch the error and answer it (FastAPI's JSON body parsing
            # made it a 400 "error parsing the body"): that answer gives way to the 413.
            nonlocal answered
            if exceeded and not answered:
                return
            answered = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not answered:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", f"body over {self.max_bytes} bytes")
        await response(scope, receive, send)


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
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, tag)
        finally:
            request_id.reset(token)
