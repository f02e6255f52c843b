"""`python -m films_service`: the film catalogue over HTTP."""

from __future__ import annotations

import logging

import uvicorn

from films_service.app import create_app
from films_service.config import FilmsSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = FilmsSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
