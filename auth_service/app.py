from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from auth_service import http_errors
from auth_service.account import SelfService
from auth_service.accounts import Accounts
from auth_service.admin_notices import LogoutNotices
from auth_service.admin_users import UserAdmin
from auth_service.backchannel import PASS_SECONDS, Backchannel
from auth_service.client_assertions import ClientKeySets
from auth_service.codes import CodeHasher, Codes
from auth_service.config import AuthSettings
from auth_service.floors import AnswerFloors
from auth_service.housekeeping import sweep
from auth_service.keys import KeyRing
from auth_service.login_codes import CodeLogin
from auth_service.models import Base
from auth_service.oauth import OAuth
from auth_service.outbox import OutboxRelay
from auth_service.passkeys import Passkeys
from auth_service.passwords import PasswordHasher
from auth_service.ratelimit import RateLimiter, configured
from auth_service.refresh import RefreshTokens
from auth_service.routes import (
    account,
    admin,
    discovery,
    login_code,
    mfa,
    oauth,
    passkeys,
    router,
    sessions,
    token,
)
from auth_service.routes import wellknown as jwks
from auth_service.throttle import AddressGuard
from auth_service.tokens import AccessTokenIssuer
from auth_service.totp import SecretBox
from auth_service.two_step import TwoStep
from auth_service.user_sessions import UserSessions
from common import dpop
from common.bearer import use_verifier
from common.db import make_engine, make_sessionmaker, migrate_apart
from common.debug import dump_tasks_on_sigusr1
from common.health import database_check, health_router
from common.housekeeping import Housekeeper
from common.http import setup_app
from common.kafka import KafkaSettings, broker_check
from common.logs import setup_logging
from common.memory import give_back_free_memory, one_malloc_arena

log = logging.getLogger(__name__)


def create_app(settings: AuthSettings | None = None, kafka: KafkaSettings | None = None) -> FastAPI:
    one_malloc_arena()  # before any thread: argon2's buffers can then be given back
    settings = settings or AuthSettings()
    kafka = kafka or KafkaSettings()
    keys = KeyRing(settings)  # fails fast on missing or mismatched key files
    if settings.production and not kafka.tls:
        log.warning(
            "KAFKA_SECURITY_PROTOCOL=%s: the codes cross the network to the broker in the "
            "clear; use SSL or SASL_SSL unless nobody else can reach the broker's network",
            kafka.security_protocol,
        )
    limits = configured(settings.rate_limits)  # fails fast on a misspelt override

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dump_tasks_on_sigusr1()
        engine = make_engine(settings.database_url)
        await migrate_apart(engine, Base)
        sessions = make_sessionmaker(engine)
        relay = OutboxRelay(sessions, engine, kafka, settings)
        passwords = PasswordHasher(settings)
        refresh_tokens = RefreshTokens(
            settings, sessions, AccessTokenIssuer(keys, settings), relay.notify
        )
        app.state.accounts = accounts = Accounts(
            settings=settings,
            sessions=sessions,
            passwords=passwords,
            codes=Codes(
                CodeHasher(keys.code_secret, keys.retired_code_secrets),
                timedelta(seconds=settings.code_ttl_seconds),
                settings.code_max_attempts,
            ),
            tokens=refresh_tokens,
            relay=relay,
            guard=AddressGuard(settings),
        )
        app.state.refresh_tokens = refresh_tokens
        app.state.code_login = CodeLogin(accounts)
        app.state.self_service = self_service = SelfService(accounts)
        app.state.two_step = TwoStep(
            self_service, SecretBox(keys.code_secret, keys.retired_code_secrets)
        )
        app.state.passkeys = Passkeys(self_service)
        key_sets = ClientKeySets(settings.client_jwks_refetch_seconds)
        app.state.oauth = OAuth(
            accounts, {c.client_id: c for c in settings.oauth_clients}, key_sets
        )
        app.state.user_sessions = UserSessions(settings, sessions, relay.notify)
        app.state.user_admin = UserAdmin(sessions, relay)
        app.state.logout_notices = LogoutNotices(sessions, app.state.oauth.clients)
        # The current key and the retired ones still live.
        use_verifier(app, keys, public_url=settings.public_url)
        # The token and pushed-request endpoints' own memory of DPoP proofs, which no
        # flood of calls to the API with bound tokens can fill.
        app.state.dpop_grants = dpop.SeenProofs()
        app.state.keys = keys
        app.state.settings = settings
        app.state.answer_floors = AnswerFloors(
            settings.enumeration_floor_ms / 1000, settings.enumeration_floor_memory_seconds
        )
        app.state.limiter = limiter = RateLimiter(
            settings.rate_limit_enabled, settings.redis_url, settings.redis_key_prefix
        )
        app.state.limits = limits
        app.state.checks = {
            "database": database_check(engine),
            "broker": broker_check(kafka),
        }
        if limiter.shared:
            app.state.checks["redis"] = limiter.redis_ok
        # One DPoP proof taken once by every instance and worker, where they share Redis.
        app.state.dpop_shared = (
            (lambda proof: limiter.once("dpop", dpop.shared_key(proof), dpop.SHARED_KEPT))
            if limiter.shared
            else None
        )
        housekeeper = Housekeeper(
            settings.housekeeping_seconds,
            lambda: sweep(engine, settings),
            should_run=lambda: relay.leader,  # one pass per database, not per instance
        )
        resume = Housekeeper(
            settings.signup_resume_after_seconds / 4,
            accounts.resume_signups,
            should_run=lambda: relay.leader,
        )
        backchannel = Backchannel(sessions, refresh_tokens.access_tokens, app.state.oauth.clients)
        notices = Housekeeper(
            PASS_SECONDS if backchannel.wanted else 0,  # 0: none runs
            backchannel.deliver_due,
            should_run=lambda: relay.leader,
        )
        relay.start()
        housekeeper.start()
        resume.start()
        notices.start()
        give_back_free_memory()
        try:
            yield
        finally:
            await notices.stop()
            await backchannel.close()
            await key_sets.close()
            await resume.stop()
            await accounts.finished()  # their emails reach the outbox first
            await housekeeper.stop()
            await relay.stop()
            limiter.close()
            passwords.close()
            await engine.dispose()

    app = FastAPI(title="auth_service", version="0.1.0", lifespan=lifespan)
    setup_app(app, max_body_bytes=settings.max_body_bytes, cors_origins=settings.cors_origins)
    http_errors.install(app)
    # Outermost: the client address the rest of the app (limits, audit) sees.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    for resource in (
        router,
        token.router,
        login_code.router,
        mfa.router,
        passkeys.router,
        oauth.router,
        account.router,
        sessions.router,
    ):
        app.include_router(resource)
    app.include_router(admin.router)
    app.include_router(admin.notices_router)
    app.include_router(jwks)
    app.include_router(discovery.router)
    app.include_router(health_router(lambda: app.state.checks))
    return app


def worker_app() -> FastAPI:
    """The factory each worker process imports when there are several."""
    setup_logging("auth")
    return create_app()
