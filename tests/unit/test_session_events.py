"""Ended sessions go out on auth.session-events: in events small enough for any broker,
and at once (the relay is woken), not at the next poll."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.config import AuthSettings
from auth_service.keys import KeyRing
from auth_service.models import OutboxEvent, RefreshToken, User, UserSession
from auth_service.refresh import RefreshTokens
from auth_service.tokens import AccessTokenIssuer, hash_refresh_token
from auth_service.user_sessions import Client, end_sessions, session_row
from common.clock import utcnow
from common.events import SESSION_EVENTS_TOPIC, SESSIONS_PER_EVENT, SessionsEnded

KAFKA_MAX_REQUEST = 1_048_576  # aiokafka's default max_request_size, and Kafka's


async def _account_with_sessions(
    sessions: async_sessionmaker[AsyncSession], count: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    user_id, now = uuid.uuid4(), utcnow()
    rows = [session_row(user_id, Client(), now, ("pwd",)) for _ in range(count)]
    async with sessions.begin() as session:
        session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", roles=[]))
        await session.flush()
        session.add_all(UserSession(**row) for row in rows)
    return user_id, [row["id"] for row in rows]


async def _published(sessions: async_sessionmaker[AsyncSession]) -> list[SessionsEnded]:
    async with sessions() as session:
        payloads = await session.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.topic == SESSION_EVENTS_TOPIC)
            .order_by(OutboxEvent.id)
        )
        return [SessionsEnded.from_bytes(p.encode()) for p in payloads if p]


async def test_many_sessions_ended_at_once_go_out_in_events_any_broker_takes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Scripted logins can leave tens of thousands of idle sessions; ending them all (a
    reset, an admin's disable) once made one record over 1 MB, which the broker refused
    and which held up every event behind it."""
    count = 2 * SESSIONS_PER_EVENT + 1
    user_id, ids = await _account_with_sessions(sessions, count)
    async with sessions.begin() as session:
        await end_sessions(session, UserSession.user_id == user_id)
    published = await _published(sessions)
    assert [len(e.session_ids) for e in published] == [SESSIONS_PER_EVENT] * 2 + [1]
    assert sorted(sid for e in published for sid in e.session_ids) == sorted(map(str, ids))
    assert all(len(e.to_json().encode()) < KAFKA_MAX_REQUEST // 10 for e in published)
    # Ended already: nothing more to say.
    async with sessions.begin() as session:
        await end_sessions(session, UserSession.user_id == user_id)
    assert len(await _published(sessions)) == 3


async def test_a_logout_wakes_the_relay(
    settings: AuthSettings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    woken: list[bool] = []
    tokens = RefreshTokens(
        settings,
        sessions,
        AccessTokenIssuer(KeyRing(settings), settings),
        lambda: woken.append(True),
    )
    user_id, (family,) = await _account_with_sessions(sessions, 1)
    async with sessions.begin() as session:
        session.add(
            RefreshToken(
                user_id=user_id,
                family_id=family,
                token_hash=hash_refresh_token("the token"),
                expires_at=utcnow().replace(year=2100),
            )
        )
    await tokens.revoke(None, None, refresh_token="the token")
    assert woken == [True]
    assert [e.session_ids for e in await _published(sessions)] == [[str(family)]]
