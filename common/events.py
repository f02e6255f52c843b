"""The Kafka event contract between auth (producer) and mailer (consumer)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

EMAIL_CODES_TOPIC = "auth.email-codes"
EMAIL_CODES_DLQ_TOPIC = "auth.email-codes.dlq"
# Transient failures wait in delay tiers (retry.0 is the shortest), off the main topic.
EMAIL_CODES_RETRY_PREFIX = "auth.email-codes.retry."
DELIVERY_STATUS_TOPIC = "mail.delivery-status"
# Kafka header carrying the HTTP request id from auth into the mailer's logs.
REQUEST_ID_HEADER = "request-id"


def retry_topic(tier: int) -> str:
    return f"{EMAIL_CODES_RETRY_PREFIX}{tier}"


# The main topic and every delay tier, for a pattern subscription.
EMAIL_CODES_TOPICS_PATTERN = (
    f"^(?:{re.escape(EMAIL_CODES_TOPIC)}|{re.escape(EMAIL_CODES_RETRY_PREFIX)}\\d+)$"
)


class EmailEventType(StrEnum):
    EMAIL_VERIFICATION = "email_verification"
    PASSWORD_RESET = "password_reset"
    ACCOUNT_EXISTS = "account_exists"


def utcnow() -> datetime:
    return datetime.now(UTC)


class EmailCodeEvent(BaseModel):
    """One email to send. Keyed on Kafka by `email` so one person's codes stay in order."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: EmailEventType
    email: str
    # None only for account_exists, which carries no code.
    code: str | None = None
    expires_at: datetime | None = None
    locale: str = "en"
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.email.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> EmailCodeEvent:
        return cls.model_validate_json(raw)

    def __repr__(self) -> str:
        # Keep the code out of every repr, traceback and log line.
        return f"EmailCodeEvent(event_id={self.event_id!r}, type={self.type.value!r})"

    __str__ = __repr__


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"


class DeliveryStatusEvent(BaseModel):
    """Published by the mailer on `mail.delivery-status`, keyed by recipient. No code in it."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    email: str
    type: str
    status: DeliveryStatus
    attempt: int
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
