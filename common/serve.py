"""Serving an app with uvicorn: one process, or several workers sharing the port.

Proxy headers are never believed by uvicorn itself (it would trust 127.0.0.1 by default):
a service that sits behind the gateway installs its own allow-list (AUTH_TRUSTED_PROXIES).
With several workers uvicorn imports the app factory in each worker process, so the
factory (`module:function`) must set logging up itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from common.metrics import MULTIPROCESS_DIR


@contextlib.contextmanager
def shared_metrics(several: bool) -> Iterator[None]:
    """A directory where the workers keep their metrics (common/metrics.py), holding no
    values of an earlier run, which would be merged in. In the operator's own (set in the
    environment, whatever the worker count: prometheus_client then uses it) the files of
    other processes than this one are deleted; with several workers and none set, a fresh
    directory is made and removed at the end. One process with none set keeps its values
    in memory."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        for stale in Path(given).glob("*.db"):
            if not stale.stem.endswith(f"_{os.getpid()}"):
                stale.unlink(missing_ok=True)
        yield
        return
    if not several:
        yield
        return
    made = tempfile.mkdtemp(prefix="metrics-")
    os.environ[MULTIPROCESS_DIR] = made  # the workers inherit it
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(made, ignore_errors=True)


def serve(app: FastAPI | str, *, host: str, port: int, workers: int = 1) -> None:
    """`app` is the app (one process) or an import string of a factory (any count)."""
    with shared_metrics(isinstance(app, str) and workers > 1):
        uvicorn.run(
            app,
            factory=isinstance(app, str),
            host=host,
            port=port,
            workers=workers if isinstance(app, str) else None,
            log_config=None,
            proxy_headers=False,
            ws="none",  # no service speaks WebSocket: an Upgrade is a plain request
        )
