"""`python -m mailer_service`: the consumer plus its health/metrics HTTP server."""

from __future__ import annotations

from common.logs import setup_logging
from common.serve import serve
from mailer_service.app import create_app
from mailer_service.config import MailerSettings


def main() -> None:
    setup_logging("mailer")
    settings = MailerSettings()
    app = create_app(settings) if settings.workers == 1 else "mailer_service.app:worker_app"
    serve(app, host=settings.host, port=settings.port, workers=settings.workers)


if __name__ == "__main__":
    main()
