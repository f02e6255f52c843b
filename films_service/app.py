from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from common.db import make_engine, make_sessionmaker, migrate
from common.health import database_check, health_router
from common.http import setup_app
from common.jwks import make_verifier
from films_service.catalogue import seed_if_empty
from films_service.config import FilmsSettings
from films_service.favourites import router as favourites_router
from films_service.models import Base
from films_service.routes import router

log = logging.getLogger(__name__)


def create_app(settings: FilmsSettings | None = None) -> FastAPI:
    settings = settings or FilmsSettings()
    verifier, jwks = make_verifier(
        jwks_url=settings.jwks_url,
        public_key_path=settings.public_key_path,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        cooldown_seconds=settings.jwks_cooldown_seconds,
        refresh_seconds=settings.jwks_refresh_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.verifier = verifier
        engine = make_engine(settings.database_url)
        await migrate(engine, Base)
        app.state.sessions = make_sessionmaker(engine)
        if seeded := await seed_if_empty(app.state.sessions):
            log.info("seeded the catalogue with %d films", seeded)
        app.state.checks = {"database": database_check(engine)}
        if jwks is not None:
            await jwks.start()

            async def keys_loaded() -> bool:
                return jwks.ready

            app.state.checks["keys"] = keys_loaded
        try:
            yield
        finally:
            if jwks is not None:
                await jwks.stop()
            await engine.dispose()

    app = FastAPI(title="films_service", version="0.1.0", lifespan=lifespan)
    setup_app(app, max_body_bytes=settings.max_body_bytes)
    app.include_router(router)
    app.include_router(favourites_router)
    app.include_router(health_router(lambda: app.state.checks))
    return app
