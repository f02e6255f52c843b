"""The security audit trail: one row per event, written in the transaction it describes."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.models import AuditEvent
from common.clock import utcnow

log = logging.getLogger("auth_service.audit")
# `entry()`'s row on a plain connection (the login's Core path).
INSERT = insert(AuditEvent.metadata.tables[AuditEvent.__tablename__])

# Sign-ups, logins ok/failed, lockouts…: the same events as the trail, as a metric.
AUTH_EVENTS = Counter("auth_events_total", "Security events by kind", ["event"])

EVENTS = {
    "signup",
    "signup_failed",  # accepted, then given up after failing for a day (detail: error)
    "verify_ok",
    "verify_failed",
    "login_ok",
    "login_failed",
    "lockout",
    "refresh_reuse",
    "refresh_replayed",  # a rotated token again within the grace period (a lost answer)
    "logout",
    "password_reset_requested",
    "password_reset",
    "password_reset_failed",
    "key_rotation",
    "code_secret_rotation",  # by the operator command; never the secret
    "role_granted",
    "role_revoked",
    "login_code_requested",
    "login_code_failed",
    "reauth_failed",  # a wrong current password before a change (detail: which)
    "password_changed",
    "email_change_requested",
    "email_change_failed",
    "email_changed",
    "account_deleted",
    "account_purged",  # never verified; by housekeeping (detail: reason)
    "session_ended",
    "sessions_ended",
    "user_disabled",
    "user_enabled",
    "users_listed",  # an admin's search (detail: admin, q)
    "user_read",  # an admin read the account
    "mfa_challenged",  # a right first step; the second is asked for (detail: method)
    "mfa_failed",  # a wrong app or recovery code
    "mfa_setup_started",
    "mfa_enabled",
    "mfa_disabled",
    "recovery_codes_renewed",
    "passkey_added",  # detail: passkey (its id)
    "passkey_removed",
    "passkeys_removed",  # every passkey of the account, by an admin (detail: admin, count)
    "passkey_failed",  # an answer that did not check out (detail: action)
    "oauth_authorized",  # a person let an application in (detail: client, scope, consented)
    "oauth_code_reused",  # a redeemed code again: its session ended (detail: client)
    "oauth_consent_revoked",  # a person took back an application's yes (detail: client)
    "client_token",  # a client's own access token (detail: client, scope)
    "logout_notices_listed",  # an admin read them (detail: admin, client, failed)
    "logout_notices_retried",  # back-channel notices given up on, again (admin, client, count)
}


def entry(
    event: str,
    *,
    user_id: uuid.UUID | None = None,
    email: str | None = None,
    ip: str | None = None,
    **detail: object,
) -> dict[str, Any]:
    """An event's row, counted and logged: `record` adds it to a session; a Core caller
    executes INSERT with it."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    AUTH_EVENTS.labels(event).inc()
    log.info("audit %s user=%s ip=%s", event, user_id, ip)
    return {
        "at": utcnow(),
        "event": event,
        "user_id": user_id,
        "email": email,
        "ip": ip,
        "detail": detail or None,
    }


def record(
    session: AsyncSession,
    event: str,
    *,
    user_id: uuid.UUID | None = None,
    email: str | None = None,
    ip: str | None = None,
    **detail: object,
) -> None:
    session.add(AuditEvent(**entry(event, user_id=user_id, email=email, ip=ip, **detail)))


async def forget_addresses(
    session: AsyncSession, user_ids: list[uuid.UUID], emails: list[str]
) -> None:
    """The trail of accounts that are going keeps their events, without their addresses."""
    await session.execute(
        update(AuditEvent)
        .where(or_(AuditEvent.user_id.in_(user_ids), AuditEvent.email.in_(emails)))
        .values(email=None)
        .execution_options(synchronize_session=False)
    )
