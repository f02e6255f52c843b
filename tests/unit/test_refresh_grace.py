"""The refresh reuse grace period (`AUTH_REFRESH_REUSE_GRACE_SECONDS`), on SQLite and on
the machine's PostgreSQL: a client that lost the answer to its refresh may present the
same token again within the period while the token it was rotated into is unused, and
gets the family's next pair; that unused successor then counts as rotated, so a copy of
it presented later is a reuse that ends the family. Off (the default), or past the
period, or once the successor was used, a rotated token presented again ends the family
at once, as it always did."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import refresh
from auth_service.errors import InvalidGrant, KeyBoundGrant
from auth_service.keys import KeyRing, generate_missing
from auth_service.models import AuditEvent, Base, User, UserSession
from auth_service.refresh import RefreshTokens
from auth_service.tokens import AccessTokenIssuer
from auth_service.user_sessions import Client
from common.clock import utcnow
from common.db import engine_of, make_engine, make_sessionmaker, migrate
from tests.conftest import auth_settings_for
from tests.postgres import fresh_url

GRACE = 10
CLIENT = Client(ip="192.0.2.7", user_agent="a phone on a train")


@dataclass
class World:
    tokens: RefreshTokens
    sessions: async_sessionmaker[AsyncSession]

    async def login(self, client: Client = CLIENT) -> str:
        """A new session's first refresh token."""
        async with self.sessions.begin() as session:
            email = f"{uuid.uuid4().hex[:8]}@example.com"
            user = User(email=email, password_hash="$argon2id$unused", email_verified=True)
            session.add(user)
        async with engine_of(self.sessions).begin() as conn:
            grant = await self.tokens.open(conn, user.id, [], client, ("pwd",))
        return grant.refresh_token

    async def rotate(self, token: str) -> str:
        return (await self.tokens.rotate(token, CLIENT)).refresh_token

    async def refused(self, token: str) -> None:
        with pytest.raises(InvalidGrant):
            await self.tokens.rotate(token, CLIENT)

    async def audit(self) -> list[str]:
        async with self.sessions() as session:
            return list(await session.scalars(select(AuditEvent.event).order_by(AuditEvent.id)))

    async def sessions_ended(self) -> bool:
        async with self.sessions() as session:
            ended = await session.scalars(select(UserSession.ended_at))
            return all(at is not None for at in ended)


async def _world(tmp_path: Path, url: str, grace: int, **more: Any) -> AsyncIterator[World]:
    settings = auth_settings_for(
        tmp_path, database_url=url, refresh_reuse_grace_seconds=grace, **more
    )
    generate_missing(settings)
    engine = make_engine(url)
    try:
        await migrate(engine, Base)
        sessions = make_sessionmaker(engine)
        issuer = AccessTokenIssuer(KeyRing(settings), settings)
        yield World(RefreshTokens(settings, sessions, issuer), sessions)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_url(request.param, tmp_path, "grace") as made:
        yield made


@pytest.fixture
async def world(backend: str, tmp_path: Path) -> AsyncIterator[World]:
    async for made in _world(tmp_path, backend, GRACE):
        yield made


@pytest.fixture
async def strict(backend: str, tmp_path: Path) -> AsyncIterator[World]:
    """The default: no grace period."""
    async for made in _world(tmp_path, backend, 0):
        yield made


async def test_off_by_default_a_token_presented_again_ends_the_family(strict: World) -> None:
    first = await strict.login()
    second = await strict.rotate(first)  # its answer "lost"
    await strict.refused(first)
    await strict.refused(second)
    assert await strict.sessions_ended()
    assert await strict.audit() == ["refresh_reuse"]


async def test_a_lost_answer_is_replayed_once_and_its_successor_then_counts_as_rotated(
    world: World,
) -> None:
    first = await world.login()
    lost = await world.rotate(first)  # the answer never reached the client
    replayed = await world.rotate(first)
    assert replayed not in (first, lost)
    assert not await world.sessions_ended()
    onward = await world.rotate(replayed)  # the family goes on from the replay
    # The lost successor turning up later is a copy in other hands: a reuse.
    await world.refused(lost)
    assert await world.sessions_ended()
    await world.refused(onward)
    assert await world.audit() == ["refresh_replayed", "refresh_reuse"]


async def test_the_successor_a_replay_spent_is_no_replay_even_within_the_period(
    world: World,
) -> None:
    """Within the period, with the replay's own successor unused: still a copy, since the
    client never had it. Otherwise two holders could trade the family back and forth."""
    first = await world.login()
    lost = await world.rotate(first)
    replayed = await world.rotate(first)
    await world.refused(lost)
    assert await world.sessions_ended()
    await world.refused(replayed)
    assert await world.audit() == ["refresh_replayed", "refresh_reuse"]


async def test_no_replay_once_the_successor_was_used(world: World) -> None:
    first = await world.login()
    second = await world.rotate(first)
    third = await world.rotate(second)  # so the client did get `second`
    await world.refused(first)  # within the period, but a copy: the family ends
    assert await world.sessions_ended()
    await world.refused(third)
    assert await world.audit() == ["refresh_reuse"]


async def test_no_replay_past_the_period(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await world.login()
    second = await world.rotate(first)
    later = utcnow() + timedelta(seconds=GRACE + 1)
    monkeypatch.setattr(refresh, "utcnow", lambda: later)
    await world.refused(first)
    assert await world.sessions_ended()
    await world.refused(second)


async def test_two_replays_at_once_get_one_pair_and_end_the_family(world: World) -> None:
    first = await world.login()
    await world.rotate(first)
    answers = await asyncio.gather(world.rotate(first), world.rotate(first), return_exceptions=True)
    assert sorted(type(answer).__name__ for answer in answers) == ["InvalidGrant", "str"]
    assert await world.sessions_ended()
    [pair] = [answer for answer in answers if isinstance(answer, str)]
    await world.refused(pair)


async def test_a_thief_who_bound_the_session_to_a_key_is_no_replay(world: World) -> None:
    """A stolen token of an unbound (public) session, refreshed with a thief's DPoP proof,
    binds the session to the thief's key (RFC 9449 §5). The holder presenting it again
    within the period, with its own key or none, is then no lost answer but a sign of the
    copy: the family ends, and the thief's token with it."""
    for holders_key in ("holder-jkt", None):
        first = await world.login()
        thief = replace(CLIENT, dpop_jkt="thief-jkt")
        stolen = (await world.tokens.rotate(first, thief)).refresh_token
        with pytest.raises(InvalidGrant):
            await world.tokens.rotate(first, replace(CLIENT, dpop_jkt=holders_key))
        with pytest.raises(InvalidGrant):
            await world.tokens.rotate(stolen, thief)
    assert await world.sessions_ended()
    assert await world.audit() == ["refresh_reuse", "refresh_reuse"]


async def test_a_client_whose_tokens_are_all_bound_refreshes_only_with_a_key(
    backend: str, tmp_path: Path
) -> None:
    """A public client registered with `dpop_bound_access_tokens` (RFC 9449 §5.2) after
    one of its sessions began unbound: that session's refresh token is refused without a
    proof, at the JSON endpoint too (no client named there), and not spent; with one it
    rotates, and the session is bound to that key."""
    must_bind = {
        "client_id": "must-bind",
        "name": "An app",
        "redirect_uris": ["https://app.example.test/callback"],
        "dpop_bound_access_tokens": True,
    }
    async for world in _world(tmp_path, backend, 0, oauth_clients=[must_bind]):
        first = await world.login(replace(CLIENT, application="must-bind"))
        with pytest.raises(KeyBoundGrant):
            await world.tokens.rotate(first, CLIENT)
        keyed = replace(CLIENT, dpop_jkt="the-apps-jkt")
        second = (await world.tokens.rotate(first, keyed)).refresh_token
        with pytest.raises(KeyBoundGrant):
            await world.tokens.rotate(second, CLIENT)
        assert (await world.tokens.rotate(second, keyed)).refresh_token
