"""Housekeeping deletes what can no longer decide anything, and nothing that still can:
each kind of row on both sides of its line, on SQLite and PostgreSQL; auth's tables and
the mailer's history."""

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
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase

from auth_service import app as app_module
from auth_service import housekeeping
from auth_service.app import create_app
from auth_service.config import AuthSettings
from auth_service.housekeeping import sweep
from auth_service.keys import generate_missing
from auth_service.models import (
    AddressThrottle,
    AuditEvent,
    Base,
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
from common import housekeeping as common_housekeeping
from common.clock import utcnow
from common.db import make_engine, make_sessionmaker, migrate
from common.events import EMAIL_CODES_TOPIC, USER_EVENTS_TOPIC, UserEvent, UserEventType
from common.kafka import KafkaSettings
from infra.ports import free_port
from infra.processes import ROOT
from mailer_service.config import MailerSettings
from mailer_service.housekeeping import sweep as mailer_sweep
from mailer_service.models import Base as MailerBase
from mailer_service.models import Delivery, DeliveryAttempt
from tests.conftest import auth_settings_for
from tests.postgres import fresh_url

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
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
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_url(request.param, tmp_path, "housekeeping") as made:
        yield made


async def migrated(url: str, base: type[DeclarativeBase]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(url)
    await migrate(engine, base)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """Auth's database."""
    async for engine in migrated(url, Base):
        yield engine


@pytest.fixture
async def mailer_engine(url: str) -> AsyncIterator[AsyncEngine]:
    async for engine in migrated(url, MailerBase):
        yield engine


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


async def _seed(session: AsyncSession, now: datetime) -> uuid.UUID:
    """Rows named by what should become of them: `gone-…` or `kept-…`. Returns the id of
    the account to be purged."""
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
    disabled = _user(
        "kept-disabled-unverified@example.com",
        verified=False,
        created=now - 30 * DAY,
        mailed=now - 30 * DAY,
    )
    disabled.disabled_at = now - 29 * DAY  # an admin's decision: the address stays taken
    session.add_all([kept_user, quiet, again, young, disabled])
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
            ("kept-token-left", now - ttl - 25 * HOUR, None),  # its token can still refresh
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
        (sessions[1], now + DAY, False),  # gone: its session ended, it refreshes nothing
        (sessions[5], now + DAY, False),  # kept: issued when refresh tokens lived longer
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
    # Two-step sign-in: a confirmed app stays; one set up and never confirmed goes.
    session.add_all(
        [
            TotpFactor(
                user_id=kept_user.id,
                secret="s",
                created_at=now - 300 * DAY,
                confirmed_at=now - 300 * DAY,
            ),
            TotpFactor(user_id=again.id, secret="s", created_at=now - 25 * HOUR),  # gone
            TotpFactor(user_id=young.id, secret="s", created_at=now - 23 * HOUR),  # kept
        ]
    )
    session.add_all(
        MfaChallenge(
            token_hash=name,
            user_id=kept_user.id,
            method="password",
            created_at=expires - 5 * timedelta(minutes=1),
            expires_at=expires,
            used_at=used,
        )
        for name, expires, used in [
            ("gone-used", now - 24 * HOUR, now - 25 * HOUR),
            ("gone-expired", now - 25 * HOUR, None),
            ("kept-used", now - 22 * HOUR, now - 23 * HOUR),
            ("kept-live", now + timedelta(minutes=4), None),
        ]
    )
    # Passkey challenges: an answered one is deleted at once; one never answered goes
    # once expired.
    session.add_all(
        PasskeyChallenge(
            challenge_hash=name,
            purpose=purpose,
            user_id=user,
            created_at=expires - timedelta(minutes=5),
            expires_at=expires,
        )
        for name, purpose, user, expires in [
            ("gone-expired", "login", None, now - timedelta(seconds=1)),
            ("gone-expired-add", "register", kept_user.id, now - HOUR),
            ("kept-live", "login", None, now + timedelta(minutes=4)),
        ]
    )
    # Authorization codes: kept a day past their minute (a second redemption then still
    # ends the session the first one opened).
    session.add_all(
        OAuthCode(
            code_hash=name,
            client_id="app",
            user_id=kept_user.id,
            redirect_uri="https://app.example/cb",
            code_challenge="c" * 43,
            scope="openid",
            auth_time=expires - HOUR,
            granted_by=uuid.uuid4(),
            created_at=expires - timedelta(minutes=1),
            expires_at=expires,
        )
        for name, expires in [
            ("gone-expired", now - 25 * HOUR),
            ("kept-expired", now - 23 * HOUR),
            ("kept-live", now + timedelta(seconds=30)),
        ]
    )
    # Back-channel logout notices: a day after they were given up on; one never tried (no
    # application listened) a day after it could have been tried last.
    session.add_all(
        LogoutNotice(
            session_id=uuid.uuid4(),
            client_id="app",
            user_id=kept_user.id,
            created_at=created,
            attempts=6 if failed else 0,
            next_attempt_at=created,
            failed_at=failed,
            error=name,
        )
        for name, created, failed in [
            ("gone-failed", now - 26 * HOUR, now - 25 * HOUR),
            ("gone-never-tried", now - 26 * HOUR, None),
            ("kept-failed", now - 24 * HOUR, now - 23 * HOUR),
            ("kept-pending", now - 24.5 * HOUR, None),
        ]
    )
    session.add(  # old, but an admin had it tried again: its next attempt is near
        LogoutNotice(
            session_id=uuid.uuid4(),
            client_id="app",
            user_id=kept_user.id,
            created_at=now - 30 * HOUR,
            attempts=0,
            next_attempt_at=now,
            error="kept-retried",
        )
    )
    session.add_all(  # a used assertion's jti, kept while some clock could still take it
        ClientAssertion(jti_hash=name, client_id="signer", expires_at=expires)
        for name, expires in [
            ("gone-expired", now - 6 * MINUTE),
            ("kept-just-expired", now - 4 * MINUTE),
            ("kept-live", now + MINUTE),
        ]
    )
    session.add_all(  # a pushed authorization request, until it expires
        PushedRequest(uri_hash=name, client_id="app", params={}, pushed_at=now, expires_at=expires)
        for name, expires in [("gone-expired", now - MINUTE), ("kept-live", now + MINUTE)]
    )
    session.add_all(
        RecoveryCode(user_id=kept_user.id, code_hmac=name, used_at=used)
        for name, used in [
            ("gone-used", now - 25 * HOUR),
            ("kept-used", now - 23 * HOUR),
            ("kept-unused", None),
        ]
    )
    session.add_all(
        [
            AuditEvent(event="login_ok", at=now - 366 * DAY, ip="gone"),
            AuditEvent(event="login_ok", at=now - 364 * DAY, ip="kept"),
            AuditEvent(
                event="signup", at=now - 8 * DAY, user_id=quiet.id, email=quiet.email, ip="kept"
            ),
        ]
    )
    return quiet.id


async def _left(engine: AsyncEngine) -> dict[str, list[str]]:
    """What is left, by name (the purge's own records aside)."""
    not_purge = AuditEvent.event != "account_purged"
    async with make_sessionmaker(engine)() as session:
        return {
            "users": sorted(await session.scalars(select(User.email))),
            "sessions": sorted(s or "" for s in await session.scalars(select(UserSession.ip))),
            "throttle": sorted(await session.scalars(select(AddressThrottle.email))),
            "outbox": sorted(
                await session.scalars(select(OutboxEvent.key).where(OutboxEvent.payload.is_(None)))
            ),
            "challenges": sorted(await session.scalars(select(MfaChallenge.token_hash))),
            "passkey_challenges": sorted(
                await session.scalars(select(PasskeyChallenge.challenge_hash))
            ),
            "recovery": sorted(await session.scalars(select(RecoveryCode.code_hmac))),
            "oauth_codes": sorted(await session.scalars(select(OAuthCode.code_hash))),
            "assertions": sorted(await session.scalars(select(ClientAssertion.jti_hash))),
            "pushed": sorted(await session.scalars(select(PushedRequest.uri_hash))),
            "logout_notices": sorted(
                s or "" for s in await session.scalars(select(LogoutNotice.error))
            ),
            "factors": sorted(
                await session.scalars(
                    select(User.email).join(TotpFactor, TotpFactor.user_id == User.id)
                )
            ),
            "audit": sorted(
                s or "" for s in await session.scalars(select(AuditEvent.ip).where(not_purge))
            ),
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
        "refresh_tokens": 2,
        "sessions": 2,
        "one_time_codes": 3,  # and one more with its account
        "mfa_challenges": 2,
        "passkey_challenges": 2,
        "recovery_codes": 1,
        "oauth_codes": 1,
        "client_assertions": 1,
        "pushed_requests": 1,
        "logout_notices": 2,
        "totp_factors": 1,
        "address_throttle": 3,
        "outbox": 2,
        "audit_events": 1,
    }
    left = await _left(engine)
    for kind, names in left.items():
        assert all(name.startswith("kept") for name in names), (kind, names)
    assert len(left["users"]) == 4 and len(left["sessions"]) == 4
    assert len(left["throttle"]) == 3 and len(left["outbox"]) == 5
    assert left["audit"] == ["kept", "kept"]
    assert len(left["challenges"]) == len(left["recovery"]) == len(left["factors"]) == 2
    assert left["logout_notices"] == ["kept-failed", "kept-pending", "kept-retried"]
    assert await _count(engine, RefreshToken) == 4
    assert await _count(engine, OneTimeCode) == 3
    assert await sweep(engine, SETTINGS, now) == dict.fromkeys(counts, 0)  # nothing left to do


async def test_a_purged_account_is_forgotten_as_a_deleted_one(engine: AsyncEngine) -> None:
    """As an account deletion: the audit trail loses the address and records the purge,
    and user.deleted (with the address, for the mailer's history) goes out by the outbox."""
    now = utcnow()
    async with make_sessionmaker(engine).begin() as session:
        purged = await _seed(session, now)
    await sweep(engine, SETTINGS, now)
    async with make_sessionmaker(engine)() as session:
        trail = (
            await session.execute(
                select(AuditEvent.event, AuditEvent.email, AuditEvent.detail)
                .where(AuditEvent.user_id == purged)
                .order_by(AuditEvent.id)
            )
        ).all()
        announced = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.key == str(purged)))
        ).one()
    assert trail == [
        ("signup", None, None),
        ("account_purged", None, {"reason": "never verified"}),
    ]
    assert announced.topic == USER_EVENTS_TOPIC and announced.payload is not None
    event = UserEvent.model_validate_json(announced.payload)
    assert (event.type, event.email) == (UserEventType.DELETED, "gone-unverified@example.com")


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
    """A sign-up again for the address (which sends a code) holds the account's lock while
    the pass runs: on PostgreSQL the pass skips the row, on SQLite it waits for the writer
    and judges the row as the sign-up left it. Either way the account stays."""
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
            await asyncio.wait({in_flight}, timeout=1.0)
        assert (await in_flight)["unverified_accounts"] == 0
    finally:
        await other.dispose()
    assert (await _left(engine))["users"] == ["again@example.com"]


async def test_a_pass_and_a_request_ending_sessions_do_not_deadlock(engine: AsyncEngine) -> None:
    """Ending sessions (a password change, a reset, an admin's disable) locks the tokens,
    then the sessions. A pass that deleted a session first, and its tokens by cascade,
    locked them the other way round: on PostgreSQL one of the two was aborted."""
    now = utcnow()
    ttl = timedelta(seconds=SETTINGS.refresh_token_ttl_seconds)
    idle = now - ttl - 25 * HOUR
    user = _user("ending@example.com", verified=True, created=now - 400 * DAY, mailed=None)
    dead = UserSession(id=uuid.uuid4(), user_id=user.id, last_used_at=idle, created_at=idle)
    async with make_sessionmaker(engine).begin() as session:
        session.add(user)
        await session.flush()
        session.add(dead)
        await session.flush()
        session.add(
            RefreshToken(user_id=user.id, family_id=dead.id, token_hash="t", expires_at=idle + ttl)
        )
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        async with make_sessionmaker(other).begin() as request:
            mine = UserSession.user_id == user.id
            await request.execute(  # end_sessions' first statement: the tokens
                update(RefreshToken)
                .where(RefreshToken.family_id.in_(select(UserSession.id).where(mine)))
                .values(revoked_at=now)
            )
            in_flight = asyncio.create_task(sweep(engine, SETTINGS, now))
            await asyncio.wait({in_flight}, timeout=1.0)
            await request.execute(  # and its second: the sessions
                update(UserSession).where(mine, UserSession.ended_at.is_(None)).values(ended_at=now)
            )
        await in_flight  # no deadlock error here
    finally:
        await other.dispose()
    async with make_sessionmaker(engine)() as session:  # nor in the request: it committed
        ended = await session.scalar(select(UserSession.ended_at).where(UserSession.id == dead.id))
    assert ended is not None


async def test_batches_go_on_until_nothing_is_left(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common_housekeeping, "BATCH", 2)
    old = utcnow() - 400 * DAY
    async with make_sessionmaker(engine).begin() as session:
        session.add_all(AuditEvent(event="login_ok", at=old) for _ in range(5))
    assert (await sweep(engine, SETTINGS))["audit_events"] == 5
    assert await _count(engine, AuditEvent) == 0


async def test_auth_runs_the_pass_in_the_process_that_relays_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's own wiring: the relay takes its lock (no broker needed for that), and its
    process runs the pass."""
    settings = auth_settings_for(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/auth.db",
        retired_keys_dir=tmp_path / "retired",
        housekeeping_seconds=0.05,
    )
    generate_missing(settings)
    monkeypatch.setattr(common_housekeeping, "FIRST_PASS_SECONDS", 0.0)
    swept = asyncio.Event()
    real_sweep = housekeeping.sweep

    async def sweep_and_say(*args: Any) -> dict[str, int]:
        counts = await real_sweep(*args)
        swept.set()
        return counts

    monkeypatch.setattr(app_module, "sweep", sweep_and_say)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nobody there
    app = create_app(settings, kafka)
    async with app.router.lifespan_context(app):
        engine = make_engine(settings.database_url)
        try:
            async with make_sessionmaker(engine).begin() as session:
                session.add(AuditEvent(event="login_ok", at=utcnow() - 400 * DAY))
            swept.clear()
            async with asyncio.timeout(30):
                await swept.wait()  # a whole pass after the row was there
                await swept.wait()
            assert await _count(engine, AuditEvent) == 0
        finally:
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


async def test_the_mailer_keeps_its_history_for_the_days_it_is_told(
    mailer_engine: AsyncEngine,
) -> None:
    now = utcnow()
    rows = [
        ("gone-sent", "sent", now - 91 * DAY),
        ("kept-sent", "sent", now - 89 * DAY),
        ("gone-failed", "failed", now - 91 * DAY),
        ("kept-retrying", "retrying", now - 91 * DAY),  # not finished: never deleted
    ]
    async with make_sessionmaker(mailer_engine).begin() as session:
        for event_id, status, updated in rows:
            session.add(
                Delivery(
                    event_id=event_id,
                    recipient="someone@example.com",
                    type="email_verification",
                    status=status,
                    attempts=1,
                    queued_at=updated,
                    updated_at=updated,
                )
            )
        await session.flush()
        session.add_all(
            DeliveryAttempt(event_id=event_id, attempt=1, outcome=status, at=updated)
            for event_id, status, updated in rows
        )
    settings = MailerSettings(history_days=90)
    assert (
        await mailer_sweep(mailer_engine, settings.model_copy(update={"history_days": 0}), now)
        == {}
    )
    assert await mailer_sweep(mailer_engine, settings, now) == {"deliveries": 2}
    async with make_sessionmaker(mailer_engine)() as session:
        left = sorted(await session.scalars(select(DeliveryAttempt.event_id)))
    assert left == ["kept-retrying", "kept-sent"]  # the attempts went with their deliveries
