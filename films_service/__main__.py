"""`python -m films_service`: the film catalogue over HTTP."""

from __future__ import annotations

import uvicorn

from common.logs import setup_logging
from films_service.app import create_app
from films_service.config import FilmsSettings


def main() -> None:
    setup_logging("films")
    settings = FilmsSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
