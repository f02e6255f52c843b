"""`python -m films_service`: the film catalogue over HTTP."""

from __future__ import annotations

from common.logs import setup_logging
from common.serve import serve
from films_service.app import create_app
from films_service.config import FilmsSettings


def main() -> None:
    setup_logging("films")
    settings = FilmsSettings()
    app = create_app(settings) if settings.workers == 1 else "films_service.app:worker_app"
    serve(app, host=settings.host, port=settings.port, workers=settings.workers)


if __name__ == "__main__":
    main()
