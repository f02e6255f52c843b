"""Serving an app with uvicorn: one process, or several workers sharing the port.

Proxy headers are never believed by uvicorn itself (it would trust 127.0.0.1 by default):
a service that sits behind the gateway installs its own allow-list (AUTH_TRUSTED_PROXIES).
With several workers uvicorn imports the app factory in each worker process, so the
factory (`module:function`) must set logging up itself.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def serve(app: FastAPI | str, *, host: str, port: int, workers: int = 1) -> None:
    """`app` is the app (one process) or an import string of a factory (any count)."""
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
