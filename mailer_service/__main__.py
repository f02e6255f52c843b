"""`python -m mailer_service`: the consumer plus its health/metrics HTTP server."""

from __future__ import annotations

import logging

import uvicorn

from mailer_service.app import create_app
from mailer_service.config import MailerSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = MailerSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
