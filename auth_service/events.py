"""What auth publishes, always through the outbox and inside the transaction that makes the
change: emails (codes and notices, keyed by recipient), user lifecycle events and ended
sessions (keyed by user id). So an event is never lost and never announces a change that
was rolled back."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.outbox import CODES_ISSUED, add_event
from common.events import (
    EMAIL_CODES_TOPIC,
    SESSION_EVENTS_TOPIC,
    SESSIONS_PER_EVENT,
    USER_EVENTS_TOPIC,
    EmailCodeEvent,
    EmailEventType,
    SessionsEnded,
    UserEvent,
    UserEventType,
)


def email_code(
    session: AsyncSession,
    kind: EmailEventType,
    to: str,
    code: str,
    expires_at: datetime,
    locale: str,
) -> None:
    CODES_ISSUED.labels(kind.value).inc()
    _email(
        session,
        EmailCodeEvent(type=kind, email=to, code=code, expires_at=expires_at, locale=locale),
    )


def email_notice(session: AsyncSession, kind: EmailEventType, to: str, locale: str) -> None:
    _email(session, EmailCodeEvent(type=kind, email=to, locale=locale))


def _email(session: AsyncSession, event: EmailCodeEvent) -> None:
    add_event(session, EMAIL_CODES_TOPIC, event.email, event.event_id, event.model_dump_json())


def user_event(
    session: AsyncSession,
    kind: UserEventType,
    user_id: uuid.UUID,
    email: str | None = None,
    kept_session: uuid.UUID | None = None,
) -> None:
    kept = str(kept_session) if kept_session else None
    event = UserEvent(type=kind, user_id=str(user_id), email=email, session_id=kept)
    add_event(session, USER_EVENTS_TOPIC, event.user_id, event.event_id, event.to_json())


def sessions_ended(session: AsyncSession, user_id: uuid.UUID, ended: list[uuid.UUID]) -> None:
    """One event per SESSIONS_PER_EVENT sessions: an account with tens of thousands of
    idle sessions (scripted logins) must not make one record over Kafka's 1 MB, which
    no broker would take and which would hold up the whole outbox behind it."""
    for start in range(0, len(ended), SESSIONS_PER_EVENT):
        chunk = [str(sid) for sid in ended[start : start + SESSIONS_PER_EVENT]]
        event = SessionsEnded(user_id=str(user_id), session_ids=chunk)
        add_event(session, SESSION_EVENTS_TOPIC, event.user_id, event.event_id, event.to_json())
