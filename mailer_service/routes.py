"""The mailer's HTTP API: a recipient's delivery history, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from common.bearer import AdminDep
from common.errors import documented
from common.schemas import Email
from mailer_service.history import History
from mailer_service.schemas import Deliveries, Delivery

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


@router.get("", response_model=Deliveries, responses=documented(401, 403, 422))
async def deliveries(
    request: Request,
    _: AdminDep,
    email: Annotated[Email, Query(description="the recipient")],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Deliveries:
    """A recipient's emails, newest first, each with its attempts (admin only)."""
    history: History = request.app.state.history
    items = await history.for_recipient(email, limit)
    return Deliveries(email=email, items=[Delivery.model_validate(i) for i in items])
