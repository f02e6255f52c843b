"""`python -m bench.films_server`: the films service as `python -m films_service` runs it,
or, with BENCH_NO_AUTH=1 (the baseline), the very same app with the bearer-token
dependency replaced by fixed claims. Only for bench/films_bench.py."""

from __future__ import annotations

import os
from typing import Any

import uvicorn

from common.http import request_claims
from films_service.app import create_app
from films_service.config import FilmsSettings


async def _fixed_claims() -> dict[str, Any]:
    return {"sub": "bench", "roles": []}


def main() -> None:
    settings = FilmsSettings()
    app = create_app(settings)
    if os.environ.get("BENCH_NO_AUTH") == "1":
        app.dependency_overrides[request_claims] = _fixed_claims
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
