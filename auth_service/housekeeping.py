"""Housekeeping: auth's tables keep what can still decide something, and not much more.

Every refresh adds a token row, every login a session; codes, lockout counters, outbox
rows and audit events pile up the same way. A pass deletes, once each has been dead for
AUTH_RETAIN_SPENT_HOURS:

- refresh tokens past their expiry, or of a session that ended. A superseded token of a
  live session stays until it expires: presenting it is what reveals a stolen one;
- sessions ended, or unused for longer than a refresh token lives, once no token of
  theirs is left (a token issued when tokens lived longer can still refresh its session);
- codes used, retired or expired; an unverified account's verification code stays with
  the account, since it may carry the password that verification makes active;
- two-step sign-in's leftovers: challenges used or expired, recovery codes used, an
  authenticator app set up and never confirmed;
- lockout and code-budget counters that no longer count (the lock is over, and the
  failures are older than the window that would still add to them);
- outbox rows settled: an email the mailer confirmed or that was closed as undelivered,
  an event published to a topic nobody confirms;

and, on their own clocks,

- accounts never verified (nor disabled by an admin), with no code sent for
  AUTH_UNVERIFIED_ACCOUNT_DAYS and none still valid: the address is free again, and a
  stranger's attempt is not kept for good. They are forgotten as a deleted account is:
  the audit trail keeps their events without the address and records the purge, and
  user.deleted goes out;
- audit events older than AUTH_AUDIT_RETENTION_DAYS.

Tokens go before sessions, as `end_sessions` locks them, and a session goes only once it
has no token left, so its delete locks nothing else. Rows go in batches of short
transactions, skipping rows a request holds on PostgreSQL (`common/housekeeping.py`).
Only the process that relays the outbox runs the periodic pass, so several instances do
not repeat it; `python -m auth_service housekeep` runs one now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Row, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth_service import audit, client_assertions, events
from auth_service.backchannel import RETRYING_SECONDS
from auth_service.config import AuthSettings
from auth_service.models import (
    AddressThrottle,
    AuditEvent,
    ClientAssertion,
    LogoutNotice,
    MfaChallenge,
    OAuthCode,
    OneTimeCode,
    OutboxEvent,
    PasskeyChallenge,
    PushedRequest,
    RecoveryCode,
    RefreshToken,
    TotpFactor,
    User,
    UserSession,
)
from auth_service.outbox import ACKNOWLEDGED_TOPICS
from common.clock import utcnow
from common.events import EmailEventType, UserEventType
from common.housekeeping import Rule, delete_spent

DELETED = Counter("auth_housekeeping_deleted_total", "Rows housekeeping deleted", ["table"])
VERIFY = EmailEventType.EMAIL_VERIFICATION.value


def rules(settings: AuthSettings, now: datetime) -> list[Rule]:
    spent = now - timedelta(hours=settings.retain_spent_hours)
    refresh_ttl = timedelta(seconds=settings.refresh_token_ttl_seconds)
    lockout_reset = timedelta(seconds=settings.lockout_reset_seconds)
    code_window = timedelta(seconds=settings.code_failure_window_seconds)
    verified = select(User.id).where(User.email_verified).scalar_subquery()
    ended = select(UserSession.id).where(UserSession.ended_at < spent)
    tokens_left = select(RefreshToken.id).where(RefreshToken.family_id == UserSession.id)
    found = [
        # Tokens before their sessions, as end_sessions orders its locks; an ended session's
        # tokens refresh nothing, whatever their expiry, and go with it.
        Rule(
            "refresh_tokens",
            RefreshToken.id,
            or_(RefreshToken.expires_at < spent, RefreshToken.family_id.in_(ended)),
        ),
        # A session goes once it holds no token (so its delete locks nothing else): one
        # still holding an unexpired token can still be refreshed, whatever last_used_at.
        Rule(
            "sessions",
            UserSession.id,
            and_(
                or_(
                    UserSession.ended_at < spent,
                    and_(
                        UserSession.ended_at.is_(None),
                        UserSession.last_used_at < spent - refresh_ttl,
                    ),
                ),
                ~tokens_left.exists(),
            ),
        ),
        Rule(
            "one_time_codes",
            OneTimeCode.id,
            or_(
                OneTimeCode.consumed_at < spent,
                and_(
                    OneTimeCode.expires_at < spent,
                    or_(OneTimeCode.purpose != VERIFY, OneTimeCode.user_id.in_(verified)),
                ),
            ),
        ),
        Rule(
            "mfa_challenges",
            MfaChallenge.token_hash,
            or_(MfaChallenge.used_at < spent, MfaChallenge.expires_at < spent),
        ),
        Rule("recovery_codes", RecoveryCode.id, RecoveryCode.used_at < spent),
        # Used ones are deleted at once; these were handed out and never answered.
        Rule(
            "passkey_challenges", PasskeyChallenge.challenge_hash, PasskeyChallenge.expires_at < now
        ),
        # Kept past their minute, so a code redeemed twice still ends the session it opened.
        Rule("oauth_codes", OAuthCode.code_hash, OAuthCode.expires_at < spent),
        # An assertion past its end is refused anyway: its jti need not be kept, once no
        # instance's clock, a few minutes behind, could still take it.
        Rule(
            "client_assertions",
            ClientAssertion.jti_hash,
            ClientAssertion.expires_at < now - client_assertions.SKEW,
        ),
        # A pushed authorization request past its end is refused anyway.
        Rule("pushed_requests", PushedRequest.uri_hash, PushedRequest.expires_at < now),
        # Given up on (after about an hour of attempts), or for an application that does
        # not listen while none does (so no pass drops them); never one still tried, an
        # admin's retry of an old one among them (its next attempt is near).
        Rule(
            "logout_notices",
            LogoutNotice.session_id,
            or_(
                LogoutNotice.failed_at < spent,
                LogoutNotice.next_attempt_at < spent - timedelta(seconds=RETRYING_SECONDS),
            ),
        ),
        # An authenticator app set up and never confirmed.
        Rule(
            "totp_factors",
            TotpFactor.user_id,
            and_(TotpFactor.confirmed_at.is_(None), TotpFactor.created_at < spent),
        ),
        Rule(
            "address_throttle",
            AddressThrottle.email,
            and_(
                or_(AddressThrottle.locked_until.is_(None), AddressThrottle.locked_until < spent),
                or_(
                    AddressThrottle.last_login_failure_at.is_(None),
                    AddressThrottle.last_login_failure_at < spent - lockout_reset,
                ),
                or_(
                    AddressThrottle.code_window_started_at.is_(None),
                    AddressThrottle.code_window_started_at < spent - code_window,
                ),
            ),
        ),
        Rule(
            "outbox",
            OutboxEvent.id,
            or_(
                OutboxEvent.acked_at < spent,
                and_(OutboxEvent.topic.not_in(ACKNOWLEDGED_TOPICS), OutboxEvent.sent_at < spent),
            ),
        ),
    ]
    if settings.unverified_account_days:
        # No code sent since, and none sent before that can still be valid.
        quiet = timedelta(days=settings.unverified_account_days)
        idle_since = now - max(quiet, timedelta(seconds=settings.code_ttl_seconds))
        unverified = and_(
            User.email_verified == false(),
            User.disabled_at.is_(None),  # an admin's decision stays
            User.created_at < idle_since,
            or_(User.last_mail_at.is_(None), User.last_mail_at < idle_since),
        )
        purge = Rule(
            "unverified_accounts",
            User.id,
            unverified,
            returning=(User.id, User.email),
            then=_forget,
        )
        found.insert(0, purge)
    if settings.audit_retention_days:
        kept = now - timedelta(days=settings.audit_retention_days)
        found.append(Rule("audit_events", AuditEvent.id, AuditEvent.at < kept))
    return found


async def _forget(session: AsyncSession, gone: Sequence[Row[Any]]) -> None:
    """As an account deletion does: the audit trail keeps its events without the address,
    records the purge, and user.deleted tells the other services (the mailer forgets its
    history of the address)."""
    if not gone:
        return
    await audit.forget_addresses(session, [row.id for row in gone], [row.email for row in gone])
    for row in gone:
        audit.record(session, "account_purged", user_id=row.id, reason="never verified")
        events.user_event(session, UserEventType.DELETED, row.id, email=row.email)


async def sweep(
    engine: AsyncEngine, settings: AuthSettings, now: datetime | None = None
) -> dict[str, int]:
    """One pass; the rows deleted, by table."""
    return await delete_spent(engine, rules(settings, now or utcnow()), DELETED)
