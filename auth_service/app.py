from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from auth_service.accounts import Accounts
from auth_service.codes import CodeHasher
from auth_service.config import AuthSettings
from auth_service.keys import KeyRing
from auth_service.models import Base
from auth_service.outbox import OutboxRelay
from auth_service.passwords import PasswordHasher
from auth_service.ratelimit import RateLimiter, configured
from auth_service.refresh import RefreshTokens
from auth_service.routes import router, wellknown
from auth_service.throttle import AddressGuard
from auth_service.tokens import AccessTokenIssuer
from common.db import make_engine, make_sessionmaker, migrate
from common.health import database_check, health_router, tcp_check
from common.http import setup_app
from common.kafka import KafkaSettings

log = logging.getLogger(__name__)


def create_app(settings: AuthSettings | None = None, kafka: KafkaSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    kafka = kafka or KafkaSettings()
    keys = KeyRing(settings)  # fails fast on missing or mismatched key files
    limits = configured(settings.rate_limits)  # fails fast on a misspelt override

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await migrate(engine, Base)
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, kafka, settings.outbox_poll_seconds)
        passwords = PasswordHasher(settings)
        refresh_tokens = RefreshTokens(settings, sessions, AccessTokenIssuer(keys, settings))
        app.state.accounts = Accounts(
            settings=settings,
            sessions=sessions,
            passwords=passwords,
            codes=CodeHasher(keys.code_secret),
            tokens=refresh_tokens,
            relay=relay,
            guard=AddressGuard(settings),
        )
        app.state.refresh_tokens = refresh_tokens
        app.state.verifier = keys  # verifies with the current and still-live retired keys
        app.state.keys = keys
        app.state.settings = settings
        app.state.limiter = RateLimiter(settings.rate_limit_enabled)
        app.state.limits = limits
        app.state.checks = {
            "database": database_check(engine),
            "broker": tcp_check(kafka.bootstrap_servers),
        }
        relay.start()
        try:
            yield
        finally:
            await relay.stop()
            passwords.close()
            await engine.dispose()

    app = FastAPI(title="auth_service", version="0.1.0", lifespan=lifespan)
    setup_app(app, max_body_bytes=settings.max_body_bytes)
    app.include_router(router)
    app.include_router(wellknown)
    app.include_router(health_router(lambda: app.state.checks))
    return app
