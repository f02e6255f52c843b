"""The mailer process: the consumer group plus its HTTP side (health, metrics, history),
and a consumer of auth's user events (a deleted account's history is forgotten)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.bearer import use_verifier
from common.db import make_engine, migrate_apart
from common.debug import dump_tasks_on_sigusr1
from common.health import database_check, health_router
from common.housekeeping import Housekeeper
from common.http import setup_app
from common.kafka import KafkaSettings, broker_check
from common.logs import setup_logging
from common.memory import give_back_free_memory
from common.revocations import RevocationFeed, Revocations
from common.user_events import UserEventsConsumer
from common.verification import OfflineVerification
from mailer_service.config import MailerSettings
from mailer_service.consumer import Mailer
from mailer_service.history import History
from mailer_service.housekeeping import sweep
from mailer_service.models import Base
from mailer_service.routes import router
from mailer_service.smtp import SmtpPool
from mailer_service.user_events import handler


def create_app(
    settings: MailerSettings | None = None, kafka: KafkaSettings | None = None
) -> FastAPI:
    settings = settings or MailerSettings()
    kafka = kafka or KafkaSettings()
    verification = OfflineVerification.from_settings(settings)  # fails fast on a missing PEM

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dump_tasks_on_sigusr1()
        use_verifier(app, verification.verifier, public_url=settings.public_url)
        app.state.admin_requires_mfa = settings.admin_requires_mfa
        engine = make_engine(settings.database_url)
        await migrate_apart(engine, Base)
        app.state.history = History(engine)
        smtp = SmtpPool(settings)
        mailer = Mailer(settings, kafka, app.state.history, smtp)
        # A group of its own: joining the mail group would rebalance the mail pipeline.
        user_events = UserEventsConsumer(
            kafka, f"{settings.group_id}.user-events", handler(app.state.history)
        )

        async def consuming() -> bool:
            return mailer.running and mailer.joined

        app.state.checks = {
            "database": database_check(engine),
            "broker": broker_check(kafka),
            "consumer": consuming,
            **verification.checks(),
        }
        housekeeper = Housekeeper(settings.housekeeping_seconds, lambda: sweep(engine, settings))
        app.state.revocations = revocations = Revocations()  # admin tokens, for /v1/deliveries
        feed = RevocationFeed(kafka, revocations)
        await verification.start()
        mailer.start()
        user_events.start()
        feed.start()
        housekeeper.start()
        give_back_free_memory()
        try:
            yield
        finally:
            await housekeeper.stop()
            await feed.stop()
            await user_events.stop()
            await mailer.stop()
            await smtp.close()
            await verification.stop()
            await engine.dispose()

    app = FastAPI(title="mailer_service", version="0.1.0", lifespan=lifespan)
    setup_app(app)
    app.include_router(router)
    app.include_router(health_router(lambda: app.state.checks))
    return app


def worker_app() -> FastAPI:
    """The factory each worker process imports when there are several."""
    setup_logging("mailer")
    return create_app()
