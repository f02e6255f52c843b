"""Cross-site request forgery: every state-changing form carries the session's synchronizer
token (`sessions.Session.csrf_token`), compared in constant time; and the browser must say
the post comes from this origin (`Origin`, else `Sec-Fetch-Site`). The SameSite=Lax cookie
is the third layer. A failure is a 403 page, and nothing is done.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from web_service.sessions import Session

FIELD = "csrf"


class CsrfRejected(Exception):
    """The post lacks this session's token, or comes from another site."""


def expected_origin(request: Request, public_origin: str | None) -> str:
    if public_origin:
        return public_origin.rstrip("/")
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def from_this_site(request: Request, public_origin: str | None) -> bool:
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == expected_origin(request, public_origin)
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    return True  # a browser that sends neither: the token alone decides


def check(
    request: Request, session: Session, form: dict[str, str], public_origin: str | None
) -> None:
    if not from_this_site(request, public_origin):
        # Named in the log: a gateway that drops the port from Host looks like this too
        # (forward `Host $http_host`, or set WEB_PUBLIC_ORIGIN).
        raise CsrfRejected(
            f"cross-site post: Origin {request.headers.get('origin')!r}, "
            f"Sec-Fetch-Site {request.headers.get('sec-fetch-site')!r}, "
            f"expected {expected_origin(request, public_origin)!r}"
        )
    expected = session.data.get(FIELD)
    given = form.get(FIELD, "")
    if (
        not session.stored
        or not expected
        or not hmac.compare_digest(given.encode(), str(expected).encode())
    ):
        raise CsrfRejected("missing or wrong token")
