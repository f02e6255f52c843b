"""Prometheus request metrics and the `/metrics` route every service serves.

With several workers (`*_WORKERS` > 1) each worker is a process of its own, and a scrape
reaches whichever one accepts it. So `serve` gives the workers a shared directory
(PROMETHEUS_MULTIPROC_DIR) where prometheus_client keeps every process's values, and
`/metrics` answers with all of them merged: counters and histograms summed, each gauge as
its `multiprocess_mode` says; the live gauges of workers that ended are dropped at each
scrape. Without several workers, values stay in memory, unless the operator sets
PROMETHEUS_MULTIPROC_DIR (one directory per service).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

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


_LIVE_GAUGE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def drop_dead_workers(directory: Path) -> None:
    """The live gauges of workers that ended: a worker stopped by a signal or killed runs
    no exit handler, and its values would count as a live worker's."""
    pids = {int(m.group(1)) for f in directory.iterdir() if (m := _LIVE_GAUGE.match(f.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def exposition() -> bytes:
    if not shared():
        return generate_latest()
    drop_dead_workers(Path(os.environ[MULTIPROCESS_DIR]))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(MetricsMiddleware)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
