from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel

from common.db import make_engine, migrate
from common.health import database_check, health_router, tcp_check
from common.http import admin_claims, setup_app
from common.jwks import make_verifier
from common.kafka import KafkaSettings
from common.schemas import Email
from mailer_service.config import MailerSettings
from mailer_service.consumer import Mailer
from mailer_service.history import History
from mailer_service.models import Base
from mailer_service.smtp import SmtpPool


class Attempt(BaseModel):
    attempt: int
    outcome: str
    error: str | None
    at: datetime


class Delivery(BaseModel):
    event_id: str
    type: str
    status: str
    attempts: int
    error: str | None
    queued_at: datetime
    updated_at: datetime
    history: list[Attempt]


class Deliveries(BaseModel):
    email: str
    items: list[Delivery]


router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


@router.get("", response_model=Deliveries, responses={401: {}, 403: {}, 422: {}})
async def deliveries(
    request: Request,
    _: Annotated[dict[str, Any], Depends(admin_claims)],
    email: Annotated[Email, Query(description="the recipient")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Deliveries:
    """A recipient's emails, newest first, each with its attempts (admin only)."""
    history: History = request.app.state.history
    items = await history.for_recipient(email, limit)
    return Deliveries(email=email, items=[Delivery.model_validate(i) for i in items])


def create_app(
    settings: MailerSettings | None = None, kafka: KafkaSettings | None = None
) -> FastAPI:
    settings = settings or MailerSettings()
    kafka = kafka or KafkaSettings()
    verifier, jwks = make_verifier(
        jwks_url=settings.jwks_url,
        public_key_path=settings.public_key_path,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        cooldown_seconds=settings.jwks_cooldown_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.verifier = verifier
        engine = make_engine(settings.database_url)
        await migrate(engine, Base)
        app.state.history = History(engine)
        smtp = SmtpPool(settings)
        mailer = Mailer(settings, kafka, app.state.history, smtp)

        async def consuming() -> bool:
            return mailer.running

        app.state.checks = {
            "database": database_check(engine),
            "broker": tcp_check(kafka.bootstrap_servers),
            "consumer": consuming,
        }
        if jwks is not None:
            await jwks.start()
        mailer.start()
        try:
            yield
        finally:
            await mailer.stop()
            await smtp.close()
            if jwks is not None:
                await jwks.stop()
            await engine.dispose()

    app = FastAPI(title="mailer_service", version="0.1.0", lifespan=lifespan)
    setup_app(app)
    app.include_router(router)
    app.include_router(health_router(lambda: app.state.checks))
    return app
