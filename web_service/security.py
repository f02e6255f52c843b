"""The browser-facing hardening: security headers on every answer, and `next=` redirects
that can only stay on this site.

The Content-Security-Policy allows scripts, styles and images from this origin only, no
inline script or style, no plugins, no framing (`frame-ancestors 'none'` and
`X-Frame-Options: DENY`), and forms that post only here.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeadersMiddleware:
    """Plain ASGI: adds the headers to every response; pages are never cached (they hold
    personal data and CSRF tokens), static files may be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")
        https = scope.get("scheme") == "https"

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                headers += HEADERS
                if https:
                    headers.append(HSTS)
                cache = b"public, max-age=3600" if static else b"no-store"
                headers.append((b"cache-control", cache))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add_headers)


class PublicSchemeMiddleware:
    """Plain ASGI: with an https WEB_PUBLIC_ORIGIN every request counts as https, whatever
    the hop before us said (a TLS load balancer in front of a plain-HTTP gateway sends
    X-Forwarded-Proto: http): the session cookie is then always Secure and `__Host-`, and
    HSTS always sent."""

    def __init__(self, app: ASGIApp, public_origin: str | None) -> None:
        self.app = app
        self.https = (public_origin or "").lower().startswith("https://")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.https and scope["type"] == "http":
            scope = {**scope, "scheme": "https"}
        await self.app(scope, receive, send)


def _unsafe_path(path: str) -> bool:
    return (
        not path.startswith("/")
        or path.startswith("//")
        or "\\" in path
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
    )


def safe_next(value: str | None, default: str = "/films") -> str:
    """`value` if it is a path on this site, else `default`. Refuses absolute URLs, scheme-
    relative `//host`, `/\\host` (browsers read a backslash as a slash), whitespace and
    control characters (browsers drop tabs and newlines), and the same hidden behind one
    or more rounds of percent-encoding."""
    if not value or len(value) > 2000 or any(c.isspace() for c in value):
        return default
    decoded = value
    for _ in range(4):
        decoded = unquote(decoded)
    for candidate in (value, decoded):
        try:
            parts = urlsplit(candidate)
        except ValueError:  # e.g. "//[x": an unclosed IPv6 host
            return default
        if parts.scheme or parts.netloc or _unsafe_path(parts.path or "/x"):
            return default
        if _unsafe_path(candidate.split("?")[0].split("#")[0]):
            return default
    return value
