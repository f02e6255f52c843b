"""`python -m mailer_service`: the consumer plus its health/metrics HTTP server."""

from __future__ import annotations

import uvicorn

from common.logs import setup_logging
from mailer_service.app import create_app
from mailer_service.config import MailerSettings


def main() -> None:
    setup_logging("mailer")
    settings = MailerSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
