"""The HTTP edge every service shares, put together: JSON errors, a body limit, request
ids, request metrics, and CORS for the browser origins a service is told to allow."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode

from common.errors import install_error_handlers
from common.metrics import install_metrics
from common.middleware import BodyLimitMiddleware, RequestIdMiddleware
from common.settings import comma_separated

_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


def _origins(origins: list[str]) -> list[str]:
    # An origin with a path or a trailing slash never matches a browser's Origin header:
    # refuse it at start-up rather than fail silently in the browser.
    bad = [o for o in origins if not _ORIGIN.match(o)]
    if bad:
        raise ValueError(f"not an origin (scheme://host[:port], no '*', no path): {bad}")
    return origins


# An allow-list of origins, comma-separated in the environment:
# "https://app.example.com, https://admin.example.com".
CorsOrigins = Annotated[
    list[str], NoDecode, BeforeValidator(comma_separated), AfterValidator(_origins)
]


def setup_app(
    app: FastAPI, *, max_body_bytes: int = 64 * 1024, cors_origins: Sequence[str] = ()
) -> None:
    install_error_handlers(app)
    install_metrics(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestIdMiddleware)  # outermost of ours: 4xx answers carry it too
    if cors_origins:
        # Outside the rest, so errors carry the headers too and a browser can read them.
        # Bearer tokens, not cookies: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
