"""Prometheus request metrics and the `/metrics` route every service serves.

With several workers (`*_WORKERS` > 1) each worker is a process of its own, and a scrape
reaches whichever one accepts it. So `serve` gives the workers a shared directory
(PROMETHEUS_MULTIPROC_DIR) where prometheus_client keeps every process's values, and
`/metrics` answers with all of them merged: counters and histograms summed, each gauge as
its `multiprocess_mode` says. One process keeps them in memory, as before.
"""

from __future__ import annotations

import atexit
import os
import time

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
)


class MetricsMiddleware:
    """Request latency histogram, labelled by route template (not raw path)."""

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


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def shared() -> bool:
    """Whether this process keeps its values in the workers' shared directory."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


def exposition() -> bytes:
    if not shared():
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(MetricsMiddleware)
    if shared():  # a worker that ends takes its live gauges with it
        atexit.register(multiprocess.mark_process_dead, os.getpid())

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
