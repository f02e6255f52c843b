"""The films app: the catalogue and favourites behind offline RS256 verification, and the
consumer of auth's user events (a deleted user's favourites go)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common.bearer import use_verifier
from common.db import make_engine, make_sessionmaker, migrate_apart
from common.debug import dump_tasks_on_sigusr1
from common.errors import error_response
from common.health import database_check, health_router
from common.http import setup_app
from common.kafka import KafkaSettings
from common.logs import setup_logging
from common.memory import give_back_free_memory
from common.revocations import RevocationFeed, Revocations
from common.user_events import UserEventsConsumer
from common.verification import OfflineVerification
from films_service.cache import ResponseCache, VersionWatch
from films_service.catalogue import FilmNotFound, seed_if_empty
from films_service.config import FilmsSettings
from films_service.favourites import router as favourites_router
from films_service.models import Base
from films_service.routes import router
from films_service.user_events import handler

log = logging.getLogger(__name__)

# What an application's token must have been granted to reach the catalogue and the
# person's favourites (auth's `films` scope; the person's own tokens need none).
FILMS_SCOPE = "films"


def create_app(
    settings: FilmsSettings | None = None, kafka: KafkaSettings | None = None
) -> FastAPI:
    settings = settings or FilmsSettings()
    kafka = kafka or KafkaSettings()
    verification = OfflineVerification.from_settings(settings)  # fails fast on a missing PEM

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dump_tasks_on_sigusr1()
        use_verifier(
            app,
            verification.verifier,
            application_scope=FILMS_SCOPE,
            public_url=settings.public_url,
        )
        app.state.admin_requires_mfa = settings.admin_requires_mfa
        engine = make_engine(settings.database_url)
        await migrate_apart(engine, Base)
        app.state.sessions = make_sessionmaker(engine)
        if seeded := await seed_if_empty(app.state.sessions):
            log.info("seeded the catalogue with %d films", seeded)
        app.state.cache = ResponseCache(settings.cache_seconds, settings.cache_bytes)
        watch = VersionWatch(app.state.cache, app.state.sessions, settings.cache_check_seconds)
        await watch.check()  # the version this process starts from, before it caches anything
        # Not the broker: films serves its catalogue whether or not Kafka is up.
        app.state.checks = {"database": database_check(engine), **verification.checks()}
        user_events = UserEventsConsumer(kafka, settings.group_id, handler(app.state.sessions))
        app.state.revocations = revocations = Revocations()
        feed = RevocationFeed(kafka, revocations)
        await verification.start()
        user_events.start()
        feed.start()
        watch.start()
        give_back_free_memory()
        try:
            yield
        finally:
            await watch.stop()
            await feed.stop()
            await user_events.stop()
            await verification.stop()
            await engine.dispose()

    app = FastAPI(title="films_service", version="0.1.0", lifespan=lifespan)
    setup_app(app, max_body_bytes=settings.max_body_bytes, cors_origins=settings.cors_origins)

    @app.exception_handler(FilmNotFound)
    async def _not_found(_: Request, exc: FilmNotFound) -> JSONResponse:
        return error_response(404, "film_not_found", "no film with that id")

    app.include_router(router)
    app.include_router(favourites_router)
    app.include_router(health_router(lambda: app.state.checks))
    return app


def worker_app() -> FastAPI:
    """The factory each worker process imports when there are several."""
    setup_logging("films")
    return create_app()
