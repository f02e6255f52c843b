"""OpenID Connect Back-Channel Logout 1.0: an application with a `backchannel_logout_uri`
is told, server to server, when one of its sessions ends, however it ends (the person
signing out here or ending it from their sessions page, taking back its access, a password
change, an admin disabling the account, a reused refresh token, its own revocation).

`end_sessions` writes a `LogoutNotice` in the transaction that ends an application's
session, so no end goes untold. Auth's leader (the outbox relay's lock) delivers them
every few seconds: it reads the due ones, posts each a logout token (`logout_token=`, a
JWT signed like the ID tokens: `aud` the client_id, `sub`, `sid`, `events`, no `nonce`;
`typ` logout+jwt) without holding a database connection, then writes down what happened.
A 200 or 204 deletes the notice; anything else (an error, a timeout, a redirect, which is
not followed) tries again later, MAX_ATTEMPTS times over about an hour, then keeps it,
marked failed and logged, until housekeeping clears it. A notice for a client without the
URI is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.config import OAuthClient
from auth_service.models import LogoutNotice
from auth_service.tokens import AccessTokenIssuer
from common.clock import utcnow

log = logging.getLogger(__name__)

EVENT = "http://schemas.openid.net/event/backchannel-logout"
PASS_SECONDS = 2.0  # how often the leader looks for due notices
BATCH = 50  # notices told at once, in one pass
TIMEOUT_SECONDS = 5.0
# Seconds before each attempt after the first: MAX_ATTEMPTS in all, over about an hour.
BACKOFF = (5, 30, 120, 600, 3000)
MAX_ATTEMPTS = len(BACKOFF) + 1
RETRYING_SECONDS = sum(BACKOFF) + MAX_ATTEMPTS * TIMEOUT_SECONDS  # the longest a notice is tried
LOGOUT_TOKEN_SECONDS = 120  # a logout token's life: it is used at once
OUTCOMES = Counter(
    "auth_backchannel_logout_total",
    "Back-channel logout notices: told, retried later, given up on, or dropped (the client "
    "does not listen)",
    ["outcome"],
)


@dataclass
class Backchannel:
    sessions: async_sessionmaker[AsyncSession]
    tokens: AccessTokenIssuer
    clients: dict[str, OAuthClient]
    _http: Any = field(default=None, repr=False)

    @property
    def wanted(self) -> bool:
        """Whether any application listens (else no pass runs, and no HTTP client loads)."""
        return any(c.backchannel_logout_uri for c in self.clients.values())

    async def deliver_due(self) -> int:
        """One pass: tell the applications of the notices that are due; how many."""
        now = utcnow()
        async with self.sessions() as session:
            due = list(
                await session.scalars(
                    select(LogoutNotice)
                    .where(LogoutNotice.failed_at.is_(None), LogoutNotice.next_attempt_at <= now)
                    .order_by(LogoutNotice.next_attempt_at)
                    .limit(BATCH)
                )
            )
        if not due:
            return 0
        # (A leader that lost its lock meanwhile finishes this pass: the new one may post
        # the same notices again, which an application takes as it took the first.)
        errors = await asyncio.gather(*(self._told(notice) for notice in due))
        async with self.sessions.begin() as session:
            for notice, error in zip(due, errors, strict=True):
                await self._record(session, notice, error)
        return len(due)

    async def _record(self, session: AsyncSession, notice: LogoutNotice, error: str | None) -> None:
        which = LogoutNotice.session_id == notice.session_id
        if error is None:
            await session.execute(delete(LogoutNotice).where(which))
            OUTCOMES.labels("told" if self._listener(notice) else "dropped").inc()
            return
        attempts = notice.attempts + 1
        now = utcnow()
        if attempts >= MAX_ATTEMPTS:
            log.error(
                "gave up telling %s that session %s ended, after %d attempts: %s",
                notice.client_id,
                notice.session_id,
                attempts,
                error,
            )
            changes: dict[str, Any] = {"failed_at": now}
            OUTCOMES.labels("given_up").inc()
        else:
            log.warning(
                "could not tell %s that session %s ended (attempt %d): %s",
                notice.client_id,
                notice.session_id,
                attempts,
                error,
            )
            changes = {"next_attempt_at": now + timedelta(seconds=BACKOFF[attempts - 1])}
            OUTCOMES.labels("retried").inc()
        # Only the notice as this pass read it: an admin's retry meanwhile stands.
        as_read = (LogoutNotice.attempts == notice.attempts, LogoutNotice.failed_at.is_(None))
        await session.execute(
            update(LogoutNotice)
            .where(which, *as_read)
            .values(attempts=attempts, error=error[:200], **changes)
        )

    async def _told(self, notice: LogoutNotice) -> str | None:
        """`_tell`, within TIMEOUT_SECONDS in all, and whatever goes wrong as the reason:
        one notice's failure is recorded as such, never the pass's."""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await self._tell(notice)
        except TimeoutError:
            return f"no answer within {TIMEOUT_SECONDS:.0f} s"
        except Exception as exc:  # an address httpx cannot use, say
            log.exception("telling %s that session %s ended", notice.client_id, notice.session_id)
            return f"{type(exc).__name__}: {exc}"[:200]

    async def _tell(self, notice: LogoutNotice) -> str | None:
        """Post the notice's logout token: None once the application took it, else why
        not. A client without the URI (or no longer configured) takes it as told."""
        uri = self._listener(notice)
        if uri is None:
            return None
        token = self.tokens.sign(
            {
                "aud": notice.client_id,
                "sub": str(notice.user_id),
                "sid": str(notice.session_id),
                "jti": str(uuid.uuid4()),
                "events": {EVENT: {}},
            },
            typ="logout+jwt",
            ttl=timedelta(seconds=LOGOUT_TOKEN_SECONDS),
        )
        import httpx  # only where an application listens: auth's memory stays as it was

        if self._http is None:  # no proxy from the environment: straight to the application
            self._http = httpx.AsyncClient(
                timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            )
        try:
            # Streamed, and the body never read: only the status counts.
            async with self._http.stream("POST", uri, data={"logout_token": token}) as answer:
                status = answer.status_code
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None if status in (200, 204) else f"HTTP {status}"

    def _listener(self, notice: LogoutNotice) -> str | None:
        """Where the notice's application listens (None: it does not, or is gone)."""
        client = self.clients.get(notice.client_id)
        return client.backchannel_logout_uri if client else None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
