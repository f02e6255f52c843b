"""What the mailer's HTTP API answers with."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
