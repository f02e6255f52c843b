"""Back-channel logout notices that cannot be delivered: tried MAX_ATTEMPTS times, then
kept, marked failed with the reason; a notice for a client that does not listen is
dropped. (Delivery itself is tests/integration/test_backchannel_logout.py's.)"""

from __future__ import annotations

import socket
import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.admin_notices import LogoutNotices
from auth_service.backchannel import BACKOFF, MAX_ATTEMPTS, Backchannel
from auth_service.config import AuthSettings, OAuthClient
from auth_service.errors import NotListening
from auth_service.keys import KeyRing
from auth_service.models import AuditEvent, LogoutNotice, User, UserSession
from auth_service.tokens import AccessTokenIssuer
from auth_service.user_sessions import Caller, Client, end_sessions, session_row
from common.clock import utcnow


def counted(outcome: str) -> float:
    """auth_backchannel_logout_total{outcome} in this process."""
    value = REGISTRY.get_sample_value("auth_backchannel_logout_total", {"outcome": outcome})
    return value or 0.0


def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def end_applications_sessions(
    sessions: async_sessionmaker[AsyncSession], *client_ids: str | None
) -> None:
    """An account with a session per client (None: the person's own), all ended."""
    user_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x", roles=[]))
        await session.flush()
        for client_id in client_ids:
            row = session_row(user_id, Client(application=client_id), utcnow(), ("pwd",))
            session.add(UserSession(**row))
        await session.flush()
        await end_sessions(session, UserSession.user_id == user_id)


async def test_an_undeliverable_notice_is_given_up_on_and_kept(
    settings: AuthSettings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    listening = OAuthClient(
        client_id="app",
        name="App",
        redirect_uris=["https://app.example/cb"],
        backchannel_logout_uri=f"http://127.0.0.1:{closed_port()}/logout",
    )
    deaf = OAuthClient(client_id="deaf", name="Deaf", redirect_uris=["https://d.example/cb"])
    backchannel = Backchannel(
        sessions,
        AccessTokenIssuer(KeyRing(settings), settings),
        {"app": listening, "deaf": deaf},
    )
    assert backchannel.wanted
    before = {outcome: counted(outcome) for outcome in ("dropped", "retried", "given_up")}
    await end_applications_sessions(sessions, "app", "deaf", None)
    async with sessions() as session:  # one notice per application's session
        assert sorted(await session.scalars(select(LogoutNotice.client_id))) == ["app", "deaf"]
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            assert await backchannel.deliver_due() == (2 if attempt == 1 else 1)
            async with sessions.begin() as session:
                (notice,) = await session.scalars(select(LogoutNotice))
                assert notice.client_id == "app" and notice.attempts == attempt
                assert notice.error and "ConnectError" in notice.error
                if attempt < MAX_ATTEMPTS:
                    assert notice.failed_at is None
                    wait = (notice.next_attempt_at - utcnow()).total_seconds()
                    assert BACKOFF[attempt - 1] - 5 < wait <= BACKOFF[attempt - 1]
                    await session.execute(update(LogoutNotice).values(next_attempt_at=utcnow()))
                else:
                    assert notice.failed_at is not None  # given up: kept, for housekeeping
        assert await backchannel.deliver_due() == 0
        after = {outcome: counted(outcome) - before[outcome] for outcome in before}
        assert after == {"dropped": 1, "retried": MAX_ATTEMPTS - 1, "given_up": 1}

        # An admin reads what was given up on, and has it tried again, afresh.
        admin = Caller(
            User(id=uuid.uuid4(), email="admin@example.com", roles=["admin"]), uuid.uuid4()
        )
        notices = LogoutNotices(sessions, {"app": listening, "deaf": deaf})
        (failed,), total = await notices.listed(
            admin, failed=True, client_id=None, limit=10, offset=0
        )
        assert total == 1 and failed.client_id == "app" and failed.attempts == MAX_ATTEMPTS
        others = await notices.listed(admin, failed=False, client_id="app", limit=10, offset=0)
        assert others == ([], 0)
        with pytest.raises(NotListening):
            await notices.retry(admin, "deaf", "127.0.0.1")  # it would be dropped as told
        assert await notices.retry(admin, None, "127.0.0.1") == 1
        async with sessions() as session:
            (notice,) = await session.scalars(select(LogoutNotice))
            assert (notice.attempts, notice.failed_at, notice.error) == (0, None, None)
        assert await backchannel.deliver_due() == 1
        async with sessions() as session:
            (notice,) = await session.scalars(select(LogoutNotice))
            assert notice.attempts == 1 and notice.failed_at is None  # tried again, not given up
            audited = await session.execute(
                select(AuditEvent.event, AuditEvent.detail)
                .where(AuditEvent.event.like("logout_notices_%"))
                .order_by(AuditEvent.id)
            )
            assert [(event, (detail or {})["admin"]) for event, detail in audited] == [
                ("logout_notices_listed", str(admin.user.id)),
                ("logout_notices_listed", str(admin.user.id)),
                ("logout_notices_retried", str(admin.user.id)),
            ]
    finally:
        await backchannel.close()


def test_nobody_listening_runs_no_pass(settings: AuthSettings) -> None:
    client = OAuthClient(client_id="a", name="A", redirect_uris=["https://a.example/cb"])
    assert not Backchannel(None, None, {"a": client}).wanted  # type: ignore[arg-type]
