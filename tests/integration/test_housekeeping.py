"""Housekeeping deletes what can no longer decide anything, and nothing that still can:
each kind of row on both sides of its line, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth_service import housekeeping
from auth_service.config import AuthSettings
from auth_service.housekeeping import Housekeeper, sweep
from auth_service.models import (
    AddressThrottle,
    AuditEvent,
    Base,
    OneTimeCode,
    OutboxEvent,
    RefreshToken,
    User,
    UserSession,
)
from common.clock import utcnow
from common.db import make_engine, make_sessionmaker, migrate
from common.events import EMAIL_CODES_TOPIC, USER_EVENTS_TOPIC
from infra.processes import ROOT
from tests.postgres import create_databases, database_url, drop_databases

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SETTINGS = AuthSettings(
    retain_spent_hours=24,
    refresh_token_ttl_seconds=14 * 86400,
    lockout_reset_seconds=12 * 3600,
    code_failure_window_seconds=86400,
    code_ttl_seconds=600,
    unverified_account_days=7,
    audit_retention_days=365,
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/auth.db"
    else:
        name = f"housekeeping_{uuid.uuid4().hex[:8]}"
        await create_databases(name)
        url = database_url(name)
    engine = make_engine(url)
    await migrate(engine, Base)
    try:
        yield engine
    finally:
        await engine.dispose()
        if request.param == "postgresql":
            await drop_databases(name)


def _user(email: str, *, verified: bool, created: datetime, mailed: datetime | None) -> User:
    return User(
        id=uuid.uuid4(),
        email=email,
        password_hash="x",
        email_verified=verified,
        roles=[],
        created_at=created,
        last_mail_at=mailed,
    )


def _code(user: User, purpose: str, *, expires: datetime, consumed: datetime | None) -> OneTimeCode:
    return OneTimeCode(
        user_id=user.id,
        purpose=purpose,
        code_hmac=uuid.uuid4().hex,
        expires_at=expires,
        consumed_at=consumed,
        created_at=expires - timedelta(minutes=10),
    )


async def _seed(session: AsyncSession, now: datetime) -> None:
    """Rows named by what should become of them: `gone-…` or `kept-…`."""
    kept_user = _user(
        "kept-verified@example.com", verified=True, created=now - 400 * DAY, mailed=None
    )
    quiet = _user(
        "gone-unverified@example.com", verified=False, created=now - 8 * DAY, mailed=now - 8 * DAY
    )
    again = _user(
        "kept-signed-up-again@example.com", verified=False, created=now - 8 * DAY, mailed=now - HOUR
    )
    young = _user(
        "kept-unverified-young@example.com",
        verified=False,
        created=now - 6 * DAY,
        mailed=now - 6 * DAY,
    )
    session.add_all([kept_user, quiet, again, young])
    await session.flush()
    session.add_all(
        [
            _code(quiet, "email_verification", expires=now - 8 * DAY, consumed=None),  # cascades
            _code(kept_user, "password_reset", expires=now - 25 * HOUR, consumed=now - 25 * HOUR),
            _code(kept_user, "password_reset", expires=now - 25 * HOUR, consumed=None),
            _code(kept_user, "email_verification", expires=now - 25 * HOUR, consumed=None),
            _code(kept_user, "login_code", expires=now - 2 * HOUR, consumed=now - HOUR),  # kept
            _code(kept_user, "password_reset", expires=now - 23 * HOUR, consumed=None),  # kept
            # An unverified account's verification code, long expired: it may carry the
            # password verification would make active, so it stays with the account.
            _code(young, "email_verification", expires=now - 5 * DAY, consumed=None),  # kept
        ]
    )
    ttl = timedelta(seconds=SETTINGS.refresh_token_ttl_seconds)
    sessions = [
        UserSession(
            id=uuid.uuid4(), user_id=kept_user.id, last_used_at=used, ended_at=ended, ip=name
        )
        for name, used, ended in [
            ("kept-live", now - HOUR, None),
            ("gone-ended", now - 2 * DAY, now - 25 * HOUR),
            ("kept-ended", now - 2 * DAY, now - 23 * HOUR),
            ("gone-unused", now - ttl - 25 * HOUR, None),
            ("kept-unused", now - ttl - 23 * HOUR, None),
        ]
    ]
    live = sessions[0]
    session.add_all(sessions)
    await session.flush()
    for family, expires, superseded in [
        (live, now - 25 * HOUR, True),  # gone: expired a day ago
        (live, now - 23 * HOUR, True),  # kept
        (live, now + 13 * DAY, True),  # kept: presenting it would reveal a stolen token
        (live, now + 14 * DAY, False),  # kept: the session's current token
        (sessions[1], now + DAY, False),  # gone with its ended session
    ]:
        session.add(
            RefreshToken(
                user_id=kept_user.id,
                family_id=family.id,
                token_hash=uuid.uuid4().hex,
                expires_at=expires,
                superseded=superseded,
            )
        )
    session.add_all(
        AddressThrottle(
            email=f"{name}@example.com",
            login_failures=failures,
            last_login_failure_at=failed,
            locked_until=locked_until,
            code_failures=code_failures,
            code_window_started_at=window,
        )
        for name, failures, failed, locked_until, code_failures, window in [
            ("kept-locked", 30, now - 40 * HOUR, now + HOUR, 0, None),
            ("kept-failing", 3, now - 35 * HOUR, None, 0, None),  # 12 h reset + 24 h
            ("gone-failed", 3, now - 37 * HOUR, None, 0, None),
            ("kept-code-window", 0, None, None, 9, now - 47 * HOUR),  # 24 h window + 24 h
            ("gone-code-window", 0, None, None, 9, now - 49 * HOUR),
            ("gone-cleared", 0, None, None, 0, None),
        ]
    )
    old, email, event = now - 30 * DAY, EMAIL_CODES_TOPIC, USER_EVENTS_TOPIC
    session.add_all(
        OutboxEvent(topic=topic, key=key, created_at=old, sent_at=sent, acked_at=acked)
        for topic, key, sent, acked in [
            (email, "gone-acked", old, now - 25 * HOUR),
            (email, "kept-acked", old, now - 23 * HOUR),
            (email, "kept-unconfirmed", old, None),  # the give-up closes it first
            (email, "kept-unsent", None, None),
            (event, "gone-published", now - 25 * HOUR, None),
            (event, "kept-published", now - 23 * HOUR, None),
            (event, "kept-unpublished", None, None),
        ]
    )
    session.add_all(
        [
            AuditEvent(event="login_ok", at=now - 366 * DAY, ip="gone"),
            AuditEvent(event="login_ok", at=now - 364 * DAY, ip="kept"),
        ]
    )


async def _left(engine: AsyncEngine) -> dict[str, list[str]]:
    async with make_sessionmaker(engine)() as session:
        return {
            "users": sorted(await session.scalars(select(User.email))),
            "sessions": sorted(s or "" for s in await session.scalars(select(UserSession.ip))),
            "throttle": sorted(await session.scalars(select(AddressThrottle.email))),
            "outbox": sorted(await session.scalars(select(OutboxEvent.key))),
            "audit": sorted(s or "" for s in await session.scalars(select(AuditEvent.ip))),
        }


async def _count(engine: AsyncEngine, model: type[Base]) -> int:
    async with make_sessionmaker(engine)() as session:
        return len((await session.scalars(select(model))).all())


async def test_a_pass_deletes_the_spent_and_keeps_what_still_counts(engine: AsyncEngine) -> None:
    now = utcnow()
    async with make_sessionmaker(engine).begin() as session:
        await _seed(session, now)
    counts = await sweep(engine, SETTINGS, now)
    assert counts == {
        "unverified_accounts": 1,
        "sessions": 2,
        "refresh_tokens": 1,  # and one more with its ended session
        "one_time_codes": 3,  # and one more with its account
        "address_throttle": 3,
        "outbox": 2,
        "audit_events": 1,
    }
    left = await _left(engine)
    for kind, names in left.items():
        assert all(name.startswith("kept") for name in names), (kind, names)
    assert len(left["users"]) == 3 and len(left["sessions"]) == 3
    assert len(left["throttle"]) == 3 and len(left["outbox"]) == 5 and left["audit"] == ["kept"]
    assert await _count(engine, RefreshToken) == 3
    assert await _count(engine, OneTimeCode) == 3
    assert await sweep(engine, SETTINGS, now) == dict.fromkeys(counts, 0)  # nothing left to do


async def test_zero_keeps_unverified_accounts_and_audit_events(engine: AsyncEngine) -> None:
    now = utcnow()
    async with make_sessionmaker(engine).begin() as session:
        await _seed(session, now)
    keep = SETTINGS.model_copy(update={"unverified_account_days": 0, "audit_retention_days": 0})
    counts = await sweep(engine, keep, now)
    assert "unverified_accounts" not in counts and "audit_events" not in counts
    left = await _left(engine)
    assert "gone-unverified@example.com" in left["users"] and "gone" in left["audit"]


async def test_a_long_code_life_keeps_an_unverified_account_while_its_code_is_valid(
    engine: AsyncEngine,
) -> None:
    now = utcnow()
    async with make_sessionmaker(engine).begin() as session:
        session.add(
            _user("slow@example.com", verified=False, created=now - 9 * DAY, mailed=now - 8 * DAY)
        )
    long_codes = SETTINGS.model_copy(update={"code_ttl_seconds": 10 * 86400})
    assert (await sweep(engine, long_codes, now))["unverified_accounts"] == 0
    assert (await sweep(engine, SETTINGS, now))["unverified_accounts"] == 1


async def test_a_sign_up_again_during_the_pass_keeps_the_account(engine: AsyncEngine) -> None:
    """The pass picks the account, then waits for the lock of a sign-up again for the same
    address (which sends a code); it judges the row as the sign-up left it, and keeps it."""
    now = utcnow()
    async with make_sessionmaker(engine).begin() as session:
        session.add(
            _user("again@example.com", verified=False, created=now - 9 * DAY, mailed=now - 8 * DAY)
        )
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        async with make_sessionmaker(other).begin() as signup:
            query = select(User).where(User.email == "again@example.com").with_for_update()
            user = (await signup.scalars(query)).one()
            user.last_mail_at = utcnow()
            await signup.flush()
            in_flight = asyncio.create_task(sweep(engine, SETTINGS, now))
            done, _ = await asyncio.wait({in_flight}, timeout=1.0)
            assert not done  # waiting for the sign-up's lock
        assert (await in_flight)["unverified_accounts"] == 0
    finally:
        await other.dispose()
    assert (await _left(engine))["users"] == ["again@example.com"]


async def test_batches_go_on_until_nothing_is_left(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "BATCH", 2)
    old = utcnow() - 400 * DAY
    async with make_sessionmaker(engine).begin() as session:
        session.add_all(AuditEvent(event="login_ok", at=old) for _ in range(5))
    assert (await sweep(engine, SETTINGS))["audit_events"] == 5
    assert await _count(engine, AuditEvent) == 0


async def test_only_the_relaying_process_runs_the_periodic_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/auth.db")
    await migrate(engine, Base)
    async with make_sessionmaker(engine).begin() as session:
        session.add(AuditEvent(event="login_ok", at=utcnow() - 400 * DAY))
    monkeypatch.setattr(housekeeping, "FIRST_PASS_SECONDS", 0.0)
    leader, asked, thrice, swept = False, 0, asyncio.Event(), asyncio.Event()

    def is_leader() -> bool:
        nonlocal asked
        asked += 1
        if asked == 3:
            thrice.set()
        return leader

    async def sweep_and_say(*args: object) -> dict[str, int]:
        counts = await sweep(*args)  # type: ignore[arg-type]
        swept.set()
        return counts

    monkeypatch.setattr(housekeeping, "sweep", sweep_and_say)
    every = SETTINGS.model_copy(update={"housekeeping_seconds": 0.02})
    keeper = Housekeeper(engine, every, is_leader)
    keeper.start()
    try:
        async with asyncio.timeout(30):
            await thrice.wait()
            assert not swept.is_set() and await _count(engine, AuditEvent) == 1
            leader = True
            await swept.wait()
        assert await _count(engine, AuditEvent) == 0
    finally:
        await keeper.stop()
        await engine.dispose()


def test_the_operator_command_runs_a_pass_and_says_what_went(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/auth.db"

    async def seed() -> None:
        engine = make_engine(url)
        await migrate(engine, Base)
        async with make_sessionmaker(engine).begin() as session:
            session.add(AuditEvent(event="login_ok", at=utcnow() - 400 * DAY))
        await engine.dispose()

    asyncio.run(seed())
    env = {**os.environ, "AUTH_DATABASE_URL": url, "LOG_FORMAT": "text"}
    done = subprocess.run(
        [sys.executable, "-m", "auth_service", "housekeep"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["audit_events"] == 1
