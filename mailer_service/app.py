from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.db import create_schema, make_engine, make_sessionmaker
from common.health import database_check, health_router, tcp_check
from common.http import setup_app
from common.kafka import KafkaSettings
from mailer_service.config import MailerSettings
from mailer_service.consumer import Mailer
from mailer_service.models import Base
from mailer_service.smtp import SmtpPool


def create_app(
    settings: MailerSettings | None = None, kafka: KafkaSettings | None = None
) -> FastAPI:
    settings = settings or MailerSettings()
    kafka = kafka or KafkaSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await create_schema(engine, Base)
        smtp = SmtpPool(settings)
        mailer = Mailer(settings, kafka, make_sessionmaker(engine), smtp)

        async def consuming() -> bool:
            return mailer.running

        app.state.checks = {
            "database": database_check(engine),
            "broker": tcp_check(kafka.bootstrap_servers),
            "consumer": consuming,
        }
        mailer.start()
        try:
            yield
        finally:
            await mailer.stop()
            await smtp.close()
            await engine.dispose()

    app = FastAPI(title="mailer_service", version="0.1.0", lifespan=lifespan)
    setup_app(app)
    app.include_router(health_router(lambda: app.state.checks))
    return app
