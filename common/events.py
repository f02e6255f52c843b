"""The Kafka event contract: auth's emails (to the mailer), the mailer's delivery status,
and auth's user lifecycle events (to films, the mailer and anyone else who listens)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from common.clock import utcnow

EMAIL_CODES_TOPIC = "auth.email-codes"
EMAIL_CODES_DLQ_TOPIC = "auth.email-codes.dlq"
# Transient failures wait in delay tiers (retry.0 is the shortest), off the main topic.
EMAIL_CODES_RETRY_PREFIX = "auth.email-codes.retry."
DELIVERY_STATUS_TOPIC = "mail.delivery-status"
USER_EVENTS_TOPIC = "auth.user-events"
# Sessions auth ended (a logout, "sign out everywhere else", a reused refresh token…), for
# the services that check tokens offline. Its own topic: a new type on auth.user-events
# would reach consumers written against that topic's list of types.
SESSION_EVENTS_TOPIC = "auth.session-events"
# Kafka header carrying the HTTP request id from auth into the mailer's logs.
REQUEST_ID_HEADER = "request-id"
# Set by auth's relay on an email it publishes again because the mailer never reported
# it finished (the report, or the record, may have been lost with a broker): the count of
# earlier publications.
REPUBLISH_HEADER = "republish"


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
    LOGIN_CODE = "login_code"
    EMAIL_CHANGE = "email_change"  # the code, sent to the new address
    EMAIL_CHANGED_NOTICE = "email_changed_notice"  # to the old address, after the change
    PASSWORD_CHANGED_NOTICE = "password_changed_notice"
    MFA_ENABLED_NOTICE = "mfa_enabled_notice"  # two-step sign-in turned on
    MFA_DISABLED_NOTICE = "mfa_disabled_notice"  # turned off, by the owner or an admin
    PASSKEY_ADDED_NOTICE = "passkey_added_notice"  # a passkey can now sign in
    PASSKEY_REMOVED_NOTICE = "passkey_removed_notice"  # the owner (or their session) removed one
    PASSKEYS_REMOVED_NOTICE = "passkeys_removed_notice"  # an admin removed every passkey


# The email types that carry no code: notices.
NOTICES = frozenset(
    {
        EmailEventType.ACCOUNT_EXISTS,
        EmailEventType.EMAIL_CHANGED_NOTICE,
        EmailEventType.PASSWORD_CHANGED_NOTICE,
        EmailEventType.MFA_ENABLED_NOTICE,
        EmailEventType.MFA_DISABLED_NOTICE,
        EmailEventType.PASSKEY_ADDED_NOTICE,
        EmailEventType.PASSKEY_REMOVED_NOTICE,
        EmailEventType.PASSKEYS_REMOVED_NOTICE,
    }
)


def _in_utc(value: datetime) -> datetime:
    """ "9999-12-31T23:30:00-01:00" has no UTC: the database write would overflow."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("not a time that exists in UTC") from None


UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _naive_as_utc(value: datetime) -> datetime:
    return _in_utc(value.replace(tzinfo=UTC) if value.tzinfo is None else value)


# When a user or session event happened. A time without a zone is read as UTC, never as
# the consumer host's local time: east of UTC that would move a revocation back by hours,
# and tokens issued meanwhile would still pass. (Auth always writes the zone; the email
# events, a narrower contract, refuse a time without one.)
EventTime = Annotated[datetime, AfterValidator(_naive_as_utc)]
# A side of an address as auth sends it: nothing that a mail library would read as a
# comment, a quote, a second address or the end of a command ("a<b@x" went to b@x).
_MAILBOX = r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+"


class EmailCodeEvent(BaseModel):
    """One email to send. Keyed on Kafka by `email` so one person's codes stay in order."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # Shapes, bounds and time zones are checked here, on arrival, so that an event the
    # mailer could not send, render safely or store is dead-lettered, not retried for ever
    # (a foreign producer's): no CR/LF reaches a header, no naive time a database.
    event_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()), pattern=r"^[A-Za-z0-9_.:-]{1,64}$"
    )
    type: EmailEventType
    email: str = Field(min_length=3, max_length=320, pattern=rf"^{_MAILBOX}@{_MAILBOX}$")
    # None only for the notices (account_exists, …), which carry no code.
    code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,32}$")
    expires_at: UtcTime | None = None
    locale: str = "en"
    occurred_at: UtcTime = Field(default_factory=utcnow)

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


class UserEventType(StrEnum):
    SIGNED_UP = "user.signed_up"
    VERIFIED = "user.verified"
    PASSWORD_CHANGED = "user.password_changed"
    EMAIL_CHANGED = "user.email_changed"
    DISABLED = "user.disabled"
    ENABLED = "user.enabled"
    DELETED = "user.deleted"


class UserEvent(BaseModel):
    """A change to an account, on `auth.user-events` keyed by `user_id`, so one account's
    events stay in order. Never a secret; `email` only where a consumer needs it
    (user.deleted: the mailer forgets that address's history)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: UserEventType
    user_id: str
    email: str | None = None
    # user.password_changed by the account's owner: the session that made the change,
    # which stays signed in (every other one ended). Absent after a reset: none stays.
    session_id: str | None = None
    occurred_at: EventTime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.user_id.encode()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserEvent:
        return cls.model_validate_json(raw)


SESSIONS_PER_EVENT = 1000  # ~40 KB an event


class SessionsEnded(BaseModel):
    """Sessions of one account that auth ended, on `auth.session-events` keyed by
    `user_id`: their access tokens (claim `sid`) no longer count."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: Literal["sessions.ended"] = "sessions.ended"
    user_id: str
    session_ids: Annotated[list[str], Field(min_length=1, max_length=SESSIONS_PER_EVENT)]
    occurred_at: EventTime = Field(default_factory=utcnow)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionsEnded:
        return cls.model_validate_json(raw)
