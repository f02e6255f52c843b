"""A sign-up is answered once its row is committed and carried out after, exactly once:
by its own request's task, or, when that failed or its process stopped, by the resume,
which has only the hash and so disputes a pending password instead of comparing it.
On SQLite and on PostgreSQL, with the real hasher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.accounts import VERIFY, Accounts
from auth_service.app import create_app
from auth_service.models import (
    AuditEvent,
    Base,
    OneTimeCode,
    OutboxEvent,
    SignupRequest,
    User,
)
from auth_service.passwords import PasswordHasher
from auth_service.user_sessions import Client
from common.clock import utcnow
from common.db import make_engine, make_sessionmaker, migrate
from common.events import EMAIL_CODES_TOPIC, EmailCodeEvent
from common.kafka import KafkaSettings
from infra.ports import free_port
from tests.auth_parts import accounts_for, auth_settings, count
from tests.postgres import fresh_url

EMAIL, PASSWORD = "signer@example.com", "a perfectly fine passphrase"


class FailingOnce(PasswordHasher):
    """A verify that fails the first time it is asked: a sign-up's first try breaks."""

    failed = False

    async def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the first verify breaks")
        return await super().verify(password, stored)


@dataclass
class Setup:
    accounts: Accounts
    sessions: async_sessionmaker[AsyncSession]

    async def count(self, model: type[Base]) -> int:
        return await count(self.sessions, model)

    async def emails(self) -> int:
        async with self.sessions() as session:
            emails = select(func.count()).where(OutboxEvent.topic == EMAIL_CODES_TOPIC)
            return int(await session.scalar(emails) or 0)

    async def last_code(self) -> str:
        """The plaintext code of the newest email (the outbox keeps it until it is sent)."""
        async with self.sessions() as session:
            newest = select(OutboxEvent.payload).where(OutboxEvent.topic == EMAIL_CODES_TOPIC)
            payload = await session.scalar(newest.order_by(OutboxEvent.id.desc()).limit(1))
        assert payload is not None
        code = EmailCodeEvent.model_validate_json(payload).code
        assert code is not None
        return code

    async def user(self) -> User:
        async with self.sessions() as session:
            found = await session.scalar(select(User).where(User.email == EMAIL))
        assert found is not None
        return found

    async def latest_code(self) -> OneTimeCode:
        async with self.sessions() as session:
            user = await self.user()
            latest = await self.accounts.codes.latest(session, user.id, VERIFY)
        assert latest is not None
        return latest

    async def age_every_request(self) -> None:
        """As if every accepted sign-up had waited longer than the resume's delay."""
        async with self.sessions.begin() as session:
            long_ago = utcnow() - timedelta(minutes=10)
            await session.execute(update(SignupRequest).values(accepted_at=long_ago))


@pytest.fixture(params=["sqlite", "postgresql"])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    async with fresh_url(request.param, tmp_path, "signups") as url:
        settings = auth_settings(tmp_path, url, resend_cooldown_seconds=0)
        engine = make_engine(url)
        await migrate(engine, Base)
        sessions = make_sessionmaker(engine)
        hasher = FailingOnce(settings)
        hasher.failed = True  # only where a test says so
        accounts = accounts_for(settings, sessions, hasher)
        try:
            yield Setup(accounts, sessions)
        finally:
            hasher.close()
            await engine.dispose()


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_the_answer_waits_for_the_row_and_the_rest_comes_after(setup: Setup) -> None:
    accepted = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    assert await setup.count(SignupRequest) == 1
    assert await setup.count(User) == 0  # nothing read of the address yet, nothing made

    await setup.accounts.finish_signup(accepted, PASSWORD)
    assert await setup.count(SignupRequest) == 0
    user = await setup.user()
    assert not user.email_verified
    assert (await setup.latest_code()).password_hash == accepted.password_hash
    assert await setup.emails() == 1  # the code's


async def test_a_signup_is_carried_out_once_whoever_tries(setup: Setup) -> None:
    first = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    assert await setup.accounts.finish_signup(first, PASSWORD)
    assert not await setup.accounts.finish_signup(first, None)  # a resume that read it before

    second = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    await setup.age_every_request()
    assert await setup.accounts.resume_signups() == 1
    assert not await setup.accounts.finish_signup(second, PASSWORD)  # its own task, late

    assert await setup.count(SignupRequest) == 0
    assert await setup.count(User) == 1
    assert await setup.emails() == 2  # one per sign-up, not per try


async def test_a_resumed_signup_cannot_compare_passwords_so_it_disputes(setup: Setup) -> None:
    await setup.accounts.finish_signup(
        await setup.accounts.accept_signup(EMAIL, PASSWORD, "en"), PASSWORD
    )
    # The same password again, carried out by its request: compared, so still pending.
    again = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    await setup.accounts.finish_signup(again, PASSWORD)
    assert (await setup.latest_code()).password_hash == again.password_hash

    # The same password once more, but only its hash is left: no password is pending.
    await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    await setup.age_every_request()
    assert await setup.accounts.resume_signups() == 1
    assert (await setup.latest_code()).password_hash is None
    assert (await setup.user()).password_hash == setup.accounts.passwords.unusable_hash
    async with setup.sessions() as session:
        newest = select(AuditEvent).where(AuditEvent.event == "signup")
        audited = await session.scalar(newest.order_by(AuditEvent.id.desc()).limit(1))
    assert audited is not None and audited.detail is not None
    assert audited.detail["resumed"] and audited.detail["disputed"]


async def test_a_failed_first_try_is_left_for_the_resume(setup: Setup) -> None:
    await setup.accounts.finish_signup(
        await setup.accounts.accept_signup(EMAIL, PASSWORD, "en"), PASSWORD
    )
    left = metric("auth_signups_left_total")
    resumed = metric("auth_signups_resumed_total")
    cast(FailingOnce, setup.accounts.passwords).failed = False

    accepted = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    setup.accounts.finish_soon(accepted, PASSWORD)
    await setup.accounts.finished()
    assert await setup.count(SignupRequest) == 1  # kept: nothing accepted is lost
    assert metric("auth_signups_left_total") == left + 1

    assert await setup.accounts.resume_signups() == 0  # not yet: its own try may be running
    await setup.age_every_request()
    assert await setup.accounts.resume_signups() == 1
    assert await setup.count(SignupRequest) == 0
    assert await setup.emails() == 2
    assert metric("auth_signups_resumed_total") == resumed + 1


async def test_shutdown_waits_for_the_signups_being_carried_out(setup: Setup) -> None:
    accepted = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    setup.accounts.finish_soon(accepted, PASSWORD)
    await asyncio.sleep(0)  # started, and then the service stops
    await setup.accounts.finished()
    assert await setup.count(SignupRequest) == 0
    assert await setup.count(User) == 1


async def test_over_its_budget_a_signup_makes_nothing(setup: Setup) -> None:
    accepted = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en", send=False)
    await setup.accounts.finish_signup(accepted, PASSWORD)
    assert await setup.count(SignupRequest) == 0
    assert await setup.count(User) == 0
    assert await setup.emails() == 0


async def test_a_code_verified_while_a_signup_waits_sets_no_password(setup: Setup) -> None:
    """A stranger signs up first; the owner signs up with their own password, is
    answered, and verifies with the code in their inbox (the stranger's password rides on
    it) before their sign-up is carried out. Neither password becomes the account's, as
    in a dispute: the old code does not beat the dispute it was due."""
    stranger = await setup.accounts.accept_signup(EMAIL, "a stranger's passphrase", "en")
    await setup.accounts.finish_signup(stranger, "a stranger's passphrase")
    owners = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")  # not carried out yet

    await setup.accounts.verify_email(EMAIL, await setup.last_code(), Client())
    user = await setup.user()
    assert user.email_verified
    assert user.password_hash == setup.accounts.passwords.unusable_hash
    async with setup.sessions() as session:
        verified = await session.scalar(select(AuditEvent).where(AuditEvent.event == "verify_ok"))
    assert verified is not None and verified.detail == {"disputed": True}

    assert await setup.accounts.finish_signup(owners, PASSWORD)  # the address is verified now
    assert (await setup.user()).password_hash == setup.accounts.passwords.unusable_hash


async def test_a_code_verified_with_no_signup_waiting_sets_its_password(setup: Setup) -> None:
    accepted = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    await setup.accounts.finish_signup(accepted, PASSWORD)
    await setup.accounts.verify_email(EMAIL, await setup.last_code(), Client())
    assert (await setup.user()).password_hash == accepted.password_hash


async def test_the_resume_goes_past_a_signup_that_keeps_failing(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("auth_service.accounts.RESUME_BATCH", 1)  # one page per row
    broken = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    await setup.accounts.accept_signup("another@example.com", PASSWORD, "en")
    await setup.age_every_request()
    carry_out = setup.accounts._signup

    async def failing(accepted: SignupRequest, *rest: Any) -> bool | None:
        if accepted.id == broken.id:
            raise RuntimeError("this one breaks")
        return await carry_out(accepted, *rest)

    monkeypatch.setattr(setup.accounts, "_signup", failing)
    assert await asyncio.wait_for(setup.accounts.resume_signups(), timeout=60) == 1
    assert await setup.count(SignupRequest) == 1  # the broken one, for the next pass
    assert await setup.count(User) == 1


@pytest.mark.parametrize("trouble", [RuntimeError("its own"), OperationalError("", {}, OSError())])
async def test_a_signup_that_keeps_failing_is_given_up_and_recorded(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, trouble: Exception
) -> None:
    """A sign-up the resume has seen fail for SIGNUP_GIVE_UP_AFTER (here: from its second
    sighting on) is no longer tried, and its failure is in the audit log and the metric:
    nothing vanishes. The database's own trouble (OperationalError) never gives one up."""
    monkeypatch.setattr("auth_service.accounts.SIGNUP_GIVE_UP_AFTER", timedelta(0))
    await setup.accounts.accept_signup(EMAIL, PASSWORD, "en", ip="192.0.2.7")
    await setup.age_every_request()

    async def failing(accepted: SignupRequest, *rest: Any) -> bool | None:
        raise trouble

    monkeypatch.setattr(setup.accounts, "_signup", failing)
    before = metric("auth_signups_failed_total")
    assert await setup.accounts.resume_signups() == 0
    assert await setup.count(SignupRequest) == 1  # never at its first sighting
    assert await setup.accounts.resume_signups() == 0
    async with setup.sessions() as session:
        row = await session.scalar(select(AuditEvent).where(AuditEvent.event == "signup_failed"))
    if isinstance(trouble, OperationalError):
        assert await setup.count(SignupRequest) == 1 and row is None
        assert metric("auth_signups_failed_total") == before
        return
    assert await setup.count(SignupRequest) == 0
    assert metric("auth_signups_failed_total") == before + 1
    assert row is not None and row.email == EMAIL and row.ip == "192.0.2.7"
    assert row.user_id is None and row.detail == {"error": "RuntimeError"}


async def test_shutdown_waits_for_a_stuck_signup_no_longer_than_it_says(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    await setup.accounts.finish_signup(
        await setup.accounts.accept_signup(EMAIL, PASSWORD, "en"), PASSWORD
    )

    async def stuck(password: str, stored: str) -> tuple[bool, str | None]:
        await asyncio.sleep(3600)  # a lock held elsewhere, say
        raise AssertionError("cancelled long before")

    monkeypatch.setattr(setup.accounts.passwords, "verify", stuck)
    setup.accounts.finish_soon(await setup.accounts.accept_signup(EMAIL, PASSWORD, "en"), PASSWORD)
    await asyncio.wait_for(setup.accounts.finished(within=0.2), timeout=30)
    assert await setup.count(SignupRequest) == 1  # left for the resume


async def test_a_late_claim_never_takes_a_newer_signups_row(setup: Setup) -> None:
    """Rows go within milliseconds, so the table is mostly empty: a new row must not
    get the id of one carried out already, which a late claim (a resume that read it
    before its task took it) would then take, and with it the newer sign-up."""
    first = await setup.accounts.accept_signup(EMAIL, PASSWORD, "en")
    assert await setup.accounts.finish_signup(first, PASSWORD)
    newer = await setup.accounts.accept_signup("newer@example.com", PASSWORD, "en")
    assert newer.id != first.id
    assert not await setup.accounts.finish_signup(first, None)  # the late claim
    assert await setup.accounts.finish_signup(newer, PASSWORD)
    assert await setup.count(User) == 2


async def test_the_signup_route_holds_later_answers_until_such_work_would_be_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real route: after one sign-up whose work went on 0.5 s past its
    answer, the next answer waits that long, so a request sent after an answer meets
    none of the work it left."""
    settings = auth_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path}/auth.db",
        enumeration_floor_ms=50,
        rate_limit_enabled=False,
    )
    carry_out = Accounts.finish_signup

    async def slowly(self: Accounts, accepted: SignupRequest, password: str | None) -> bool:
        await asyncio.sleep(0.5)
        return await carry_out(self, accepted, password)

    monkeypatch.setattr(Accounts, "finish_signup", slowly)
    app = create_app(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        body = {"email": EMAIL, "password": PASSWORD}
        assert (await http.post("/v1/auth/signup", json=body)).status_code == 202
        await app.state.accounts.finished()
        started = time.perf_counter()
        body = {"email": "next@example.com", "password": PASSWORD}
        assert (await http.post("/v1/auth/signup", json=body)).status_code == 202
        assert time.perf_counter() - started >= 0.45  # a lower bound: never sooner
