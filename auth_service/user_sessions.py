"""Sessions: one per login, the refresh-token family, with when and where it was used.

Ending a session revokes its refresh tokens in the same transaction, so a refresh with any
of them is refused at once; auth's own Bearer routes refuse an access token whose session
(`sid`) has ended or whose account is gone or disabled. A user sees and ends only their own
sessions: another user's session id answers as if it did not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit, events
from auth_service.config import AuthSettings
from auth_service.errors import NotAuthenticated, SessionNotFound
from auth_service.models import LogoutNotice, RefreshToken, User, UserSession
from common.bearer import passed_two_steps
from common.clock import utcnow


@dataclass(frozen=True)
class Client:
    """Where a request came from, as far as the edge can tell."""

    ip: str | None = None
    user_agent: str | None = None
    application: str | None = None  # the OAuth client a new session is opened for
    # The thumbprint of the key of the request's DPoP proof (RFC 9449): its access tokens
    # are bound to it, and, where `binds_session`, a new session's refresh tokens too.
    dpop_jkt: str | None = None
    binds_session: bool = False


@dataclass(frozen=True)
class Caller:
    """The account and session behind a verified access token, both checked live."""

    user: User
    session_id: uuid.UUID
    two_step: bool = False  # the token's session passed two-step sign-in
    application: str | None = None  # the OAuth client the session was opened for
    scope: str = ""  # what was granted to that client


def session_row(
    user_id: uuid.UUID,
    client: Client,
    now: datetime,
    amr: tuple[str, ...],
    scope: str | None = None,
) -> dict[str, Any]:
    """A new session's row, for the ORM or Core alike; `amr`: how it was signed in;
    `scope`: what an application's session was granted."""
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "created_at": now,
        "last_used_at": now,
        "ip": client.ip,
        "user_agent": client.user_agent,
        "amr": " ".join(amr) or None,
        "client_id": client.application,
        "scope": scope,
        "dpop_jkt": client.dpop_jkt if client.binds_session else None,
    }


def open_session(
    session: AsyncSession,
    user_id: uuid.UUID,
    client: Client,
    amr: tuple[str, ...],
    scope: str | None = None,
) -> uuid.UUID:
    row = UserSession(**session_row(user_id, client, utcnow(), amr, scope))
    session.add(row)
    return row.id


async def end_sessions(session: AsyncSession, *where: ColumnElement[bool]) -> None:
    """End the sessions matching `where` and revoke their refresh tokens, in the caller's
    transaction. Tokens first, then sessions: the order a refresh locks them in (it
    rotates its token, then touches its session), so the two never deadlock on
    PostgreSQL. A token a refresh adds meanwhile is refused by its ended session. The
    ended sessions are announced on `auth.session-events` (one event per account), so
    films and the mailer refuse their access tokens too; an application's, to the
    application as well (a `LogoutNotice`)."""
    now = utcnow()
    await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.family_id.in_(select(UserSession.id).where(*where)),
            RefreshToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    ended = await session.execute(
        update(UserSession)
        .where(*where, UserSession.ended_at.is_(None))
        .values(ended_at=now)
        .returning(UserSession.user_id, UserSession.id, UserSession.client_id)
        .execution_options(synchronize_session=False)
    )
    by_account: dict[uuid.UUID, list[uuid.UUID]] = {}
    for user_id, session_id, client_id in ended:
        by_account.setdefault(user_id, []).append(session_id)
        if client_id is not None:  # an application's: it is told (backchannel.py)
            session.add(
                LogoutNotice(
                    session_id=session_id,
                    client_id=client_id,
                    user_id=user_id,
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now,
                )
            )
    for user_id, session_ids in by_account.items():
        events.sessions_ended(session, user_id, session_ids)


@dataclass
class UserSessions:
    settings: AuthSettings
    sessions: async_sessionmaker[AsyncSession]
    # The outbox relay's notify: ended sessions are announced now, not at the next poll.
    wake_relay: Callable[[], None]

    async def authenticate(self, claims: dict[str, Any]) -> Caller:
        """The caller behind verified claims; NotAuthenticated when the account is gone or
        disabled, or the token's session ended (or it has none: issued before sessions)."""
        try:
            user_id, session_id = uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims.get("sid")))
        except ValueError as exc:
            raise NotAuthenticated from exc
        async with self.sessions() as session:
            found = (
                await session.execute(
                    select(User, UserSession.ended_at, UserSession.client_id, UserSession.scope)
                    .join(UserSession, UserSession.user_id == User.id)
                    .where(User.id == user_id, UserSession.id == session_id)
                )
            ).one_or_none()
        if found is None or found[1] is not None or found[0].disabled:
            raise NotAuthenticated
        return Caller(found[0], session_id, passed_two_steps(claims), found[2], found[3] or "")

    async def live(self, user_id: uuid.UUID) -> list[UserSession]:
        """The account's live sessions, most recently used first."""
        oldest = utcnow() - timedelta(seconds=self.settings.refresh_token_ttl_seconds)
        async with self.sessions() as session:
            rows = await session.scalars(
                select(UserSession)
                .where(
                    UserSession.user_id == user_id,
                    UserSession.ended_at.is_(None),
                    UserSession.last_used_at > oldest,
                )
                .order_by(UserSession.last_used_at.desc(), UserSession.id)
            )
            return list(rows)

    async def end(self, caller: Caller, session_id: uuid.UUID, ip: str | None = None) -> None:
        """End one of the caller's sessions (the current one too: a logout)."""
        async with self.sessions.begin() as session:
            owner = await session.scalar(
                select(UserSession.user_id).where(UserSession.id == session_id)
            )
            if owner != caller.user.id:
                raise SessionNotFound
            await end_sessions(session, UserSession.id == session_id)
            audit.record(
                session, "session_ended", user_id=caller.user.id, ip=ip, sid=str(session_id)
            )
        self.wake_relay()

    async def end_others(self, caller: Caller, ip: str | None = None) -> None:
        async with self.sessions.begin() as session:
            await end_others(session, caller)
            audit.record(session, "sessions_ended", user_id=caller.user.id, ip=ip, kept="current")
        self.wake_relay()


async def end_others(session: AsyncSession, caller: Caller) -> None:
    """End every session of the caller's account but the one they call from."""
    await end_sessions(
        session, UserSession.user_id == caller.user.id, UserSession.id != caller.session_id
    )
