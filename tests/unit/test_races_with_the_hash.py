"""What another request commits while a password is being hashed (~50 ms) is not undone.

A password reset or change, or an admin's disable, ends every session of the account: a
login verified against the old state must not start one, and a password change or an
account deletion checked against the old password must not go through. A lockout that
other guesses set meanwhile holds for a right password still in flight. More races of
the same kind, without a hash: an address taken between an address change's check and its
write, a token added to a session while it ended, a right code in flight while other
guesses spent the address's budget, and an admin demoted since their request began."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.account import SelfService
from auth_service.accounts import RESET, Accounts
from auth_service.admin_users import UserAdmin
from auth_service.codes import CodeHasher, Codes
from auth_service.config import AuthSettings
from auth_service.errors import (
    AccountLocked,
    EmailTaken,
    Forbidden,
    InvalidCode,
    InvalidCredentials,
    InvalidGrant,
    InvalidPassword,
    MfaRequired,
    TooManyCodeAttempts,
)
from auth_service.models import (
    AddressThrottle,
    Base,
    MfaChallenge,
    OneTimeCode,
    RefreshToken,
    TotpFactor,
    User,
    UserSession,
)
from auth_service.passwords import PasswordHasher
from auth_service.user_sessions import Caller, Client
from common.clock import utcnow
from common.db import engine_of, make_engine, make_sessionmaker, migrate
from tests.auth_parts import accounts_for, auth_settings, count
from tests.postgres import create_databases, database_url, drop_databases

EMAIL, PASSWORD = "racer@example.com", "a perfectly fine passphrase"
RESET_HASH = "$argon2id$set-by-a-reset"

Meddle = Callable[[AsyncSession], Any]


class MeddlingHasher(PasswordHasher):
    """Runs `meddle` in its own transaction once the real verify is done: what another
    request could commit while this login's hash ran."""

    def __init__(self, settings: AuthSettings, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(settings)
        self.sessions = sessions
        self.meddle: Meddle | None = None
        self.hashed = 0

    async def _meddle(self) -> None:
        if self.meddle is not None:
            async with self.sessions.begin() as session:
                await self.meddle(session)

    async def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        result = await super().verify(password, stored)
        await self._meddle()
        return result

    async def hash(self, password: str) -> str:
        self.hashed += 1
        stored = await super().hash(password)
        await self._meddle()
        return stored


@dataclass
class Setup:
    accounts: Accounts
    hasher: MeddlingHasher
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async for made in _setup(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/auth.db"):
        yield made


@pytest.fixture
async def pg_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """The same on PostgreSQL: a fresh database, dropped afterwards."""
    name = f"races_{uuid.uuid4().hex[:8]}"
    await create_databases(name)
    try:
        async for made in _setup(tmp_path, database_url(name)):
            yield made
    finally:
        await drop_databases(name)


async def _setup(tmp_path: Path, url: str) -> AsyncIterator[Setup]:
    settings = auth_settings(tmp_path, url)
    engine = make_engine(settings.database_url)
    await migrate(engine, Base)
    sessions = make_sessionmaker(engine)
    hasher = MeddlingHasher(settings, sessions)
    async with sessions.begin() as session:
        session.add(
            User(
                email=EMAIL,
                password_hash=await hasher.hash(PASSWORD),
                email_verified=True,
                roles=[],
            )
        )
    accounts = accounts_for(settings, sessions, hasher)
    try:
        yield Setup(accounts, hasher, sessions)
    finally:
        hasher.close()
        await engine.dispose()


async def _reset(session: AsyncSession) -> None:
    await session.execute(update(User).where(User.email == EMAIL).values(password_hash=RESET_HASH))


async def _disable(session: AsyncSession) -> None:
    await session.execute(update(User).where(User.email == EMAIL).values(disabled_at=utcnow()))


async def _lock_out(session: AsyncSession) -> None:
    """What the 30th wrong guess in flight beside this one commits."""
    locked_until = utcnow() + timedelta(minutes=1)
    session.add(AddressThrottle(email=EMAIL, login_failures=30, locked_until=locked_until))


@pytest.mark.parametrize("password", [PASSWORD, "a wrong guess"], ids=["right", "wrong"])
async def test_a_lockout_set_during_the_hash_holds_for_the_right_password(
    setup: Setup, password: str
) -> None:
    """Every guess in flight read "not locked" before its hash; the one with the right
    password must not get in once the others have locked the address, and the answer is
    the same for a wrong one, so that it does not tell which guess was right."""
    setup.hasher.meddle = _lock_out
    with pytest.raises(AccountLocked):
        await setup.accounts.login(EMAIL, password, Client())
    assert await count(setup.sessions, UserSession) == 0
    assert await count(setup.sessions, RefreshToken) == 0


async def test_an_undisturbed_login_starts_a_session(setup: Setup) -> None:
    pair = await setup.accounts.login(EMAIL, PASSWORD, Client())
    assert pair.refresh_token
    assert await count(setup.sessions, UserSession) == 1
    assert await count(setup.sessions, RefreshToken) == 1


@pytest.mark.parametrize("meddle", [_reset, _disable], ids=["password reset", "disabled"])
async def test_a_change_during_the_hash_refuses_the_login(setup: Setup, meddle: Meddle) -> None:
    setup.hasher.meddle = meddle
    with pytest.raises(InvalidCredentials):
        await setup.accounts.login(EMAIL, PASSWORD, Client())
    assert await count(setup.sessions, UserSession) == 0
    assert await count(setup.sessions, RefreshToken) == 0


async def _stored_hash(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    async with sessions() as session:
        return await session.scalar(select(User.password_hash).where(User.email == EMAIL))


async def _caller(sessions: async_sessionmaker[AsyncSession]) -> Caller:
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.email == EMAIL))
    assert user is not None
    return Caller(user, uuid.uuid4())


@pytest.mark.parametrize("during_the_hash", [None, _reset], ids=["undisturbed", "reset"])
async def test_a_password_change_never_overwrites_a_reset(
    setup: Setup, during_the_hash: Meddle | None
) -> None:
    caller, before = await _caller(setup.sessions), await _stored_hash(setup.sessions)
    setup.hasher.meddle = during_the_hash
    change = SelfService(setup.accounts).change_password(caller, PASSWORD, "a new one", "en")
    if during_the_hash is None:
        await change
        assert await _stored_hash(setup.sessions) not in (before, RESET_HASH)
    else:
        with pytest.raises(InvalidPassword):
            await change
        assert await _stored_hash(setup.sessions) == RESET_HASH


@pytest.mark.parametrize("during_the_hash", [None, _reset], ids=["undisturbed", "reset"])
async def test_a_deletion_checked_against_a_replaced_password_is_refused(
    setup: Setup, during_the_hash: Meddle | None
) -> None:
    caller = await _caller(setup.sessions)
    setup.hasher.meddle = during_the_hash
    deletion = SelfService(setup.accounts).delete(caller, PASSWORD)
    if during_the_hash is None:
        await deletion
        assert await _stored_hash(setup.sessions) is None  # gone
    else:
        with pytest.raises(InvalidPassword):
            await deletion
        assert await _stored_hash(setup.sessions) == RESET_HASH  # still there


async def test_an_address_taken_after_the_check_answers_email_taken(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirming an address change checks the address is free, then writes it. Another
    account taking it in between (a sign-up) hit the unique key later, in reissue's
    queries, outside the handler: a 500 instead of email_taken."""
    taken = "taken@example.com"
    async with setup.sessions.begin() as session:
        session.add(User(email=taken, password_hash="x", email_verified=True, roles=[]))
    caller = await _caller(setup.sessions)

    async def redeem(session: AsyncSession, *_: object) -> tuple[User, Any]:
        user = await session.get(User, caller.user.id)
        assert user is not None
        return user, SimpleNamespace(new_email=taken)

    async def free(*_: object, **__: object) -> None:
        return None  # as the check found it, before the other account took the address

    monkeypatch.setattr(setup.accounts, "redeem", redeem)
    monkeypatch.setattr(setup.accounts, "user_by_email", free)
    with pytest.raises(EmailTaken):
        await SelfService(setup.accounts).confirm_email_change(caller, "123456", "en", Client())
    async with setup.sessions() as session:
        kept = await session.scalar(select(User.email).where(User.id == caller.user.id))
    assert kept == EMAIL  # the change was rolled back


async def _reset_code(setup: Setup) -> str:
    async with setup.sessions.begin() as session:
        user = await session.scalar(select(User).where(User.email == EMAIL))
        assert user is not None
        return setup.accounts.codes.issue(session, user.id, RESET, utcnow()).code


async def _use_the_codes(session: AsyncSession) -> None:
    """What a reset with the same code, in flight beside this one, commits."""
    await session.execute(update(OneTimeCode).values(consumed_at=utcnow()))


@pytest.mark.parametrize("email", [EMAIL, "nobody@example.com"], ids=["known", "unknown"])
async def test_a_wrong_reset_code_is_answered_without_a_hash(setup: Setup, email: str) -> None:
    """A reset hashed the new password before it looked at the code. When the hash queue
    pushed the answer past the floor, the few milliseconds a known address takes longer
    showed again; a wrong code now waits for no hash."""
    code = await _reset_code(setup)
    wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
    hashed = setup.hasher.hashed
    with pytest.raises(InvalidCode):
        await setup.accounts.reset_password(email, wrong, "a brand new passphrase")
    assert setup.hasher.hashed == hashed
    async with setup.sessions() as session:  # the try was spent all the same
        attempts = await session.scalar(select(OneTimeCode.attempts))
    assert attempts == (1 if email == EMAIL else 0)


async def test_over_the_budget_a_right_reset_code_costs_no_hash_either(setup: Setup) -> None:
    """Over the address's budget of wrong codes, a right code must not be told from a
    wrong one: neither is looked at, neither hashes."""
    code = await _reset_code(setup)
    cap = setup.accounts.settings.code_max_failures_per_address
    async with setup.sessions.begin() as session:
        session.add(
            AddressThrottle(
                email=EMAIL, login_failures=0, code_failures=cap, code_window_started_at=utcnow()
            )
        )
    hashed = setup.hasher.hashed
    with pytest.raises(TooManyCodeAttempts):
        await setup.accounts.reset_password(EMAIL, code, "a brand new passphrase")
    assert setup.hasher.hashed == hashed


async def test_a_code_that_became_right_after_the_look_is_refused_and_kept(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looked at as wrong, redeemed as right (a new code committed in between): no hash
    was made, so nothing is set; the redemption is rolled back and the code still works."""
    code, before = await _reset_code(setup), await _stored_hash(setup.sessions)

    async def wrong(*_: object) -> bool:
        return False

    with monkeypatch.context() as patched:
        patched.setattr(setup.accounts.codes, "would_match", wrong)
        with pytest.raises(InvalidCode):
            await setup.accounts.reset_password(EMAIL, code, "a brand new passphrase")
    assert await _stored_hash(setup.sessions) == before
    async with setup.sessions() as session:
        assert await session.scalar(select(OneTimeCode.attempts)) == 0  # no try spent
    await setup.accounts.reset_password(EMAIL, code, "a brand new passphrase")
    assert await _stored_hash(setup.sessions) != before


@pytest.mark.parametrize("during_the_hash", [None, _use_the_codes], ids=["undisturbed", "used"])
async def test_a_reset_code_is_redeemed_after_the_hash(
    setup: Setup, during_the_hash: Meddle | None
) -> None:
    """The code is looked at before the hash and redeemed after it: a code another request
    used up meanwhile sets no password."""
    code, before = await _reset_code(setup), await _stored_hash(setup.sessions)
    setup.hasher.meddle = during_the_hash
    reset = setup.accounts.reset_password(EMAIL, code, "a brand new passphrase")
    if during_the_hash is None:
        await reset
        assert await _stored_hash(setup.sessions) != before
    else:
        with pytest.raises(InvalidCode):
            await reset
        assert await _stored_hash(setup.sessions) == before


async def test_a_token_that_outlived_its_session_refreshes_nothing(setup: Setup) -> None:
    """A refresh or a reissue can add a token while another request ends the session (the
    end revokes the tokens it sees, then ends the session): that token stays unrevoked in
    an ended session, and must refresh nothing."""
    pair = await setup.accounts.login(EMAIL, PASSWORD, Client())
    async with setup.sessions.begin() as session:
        await session.execute(update(UserSession).values(ended_at=utcnow()))
    with pytest.raises(InvalidGrant):
        await setup.accounts.tokens.rotate(pair.refresh_token, Client())


async def test_a_right_code_in_flight_when_the_address_budget_ran_out_is_refused(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redemption checked the address's budget of wrong codes, then waited for the
    account's lock. A right code in flight while other guesses (another process here) used
    up the budget was still judged, and got in. The budget is now read after the lock."""
    codes = Codes(CodeHasher(b"a code secret for the test"), timedelta(minutes=10), 5)
    monkeypatch.setattr(setup.accounts, "codes", codes)
    async with setup.sessions.begin() as session:
        user = await session.scalar(select(User).where(User.email == EMAIL))
        assert user is not None
        code = codes.issue(session, user.id, RESET, utcnow()).code
    other = make_engine(f"sqlite+aiosqlite:///{tmp_path}/auth.db")
    cap = setup.accounts.settings.code_max_failures_per_address

    async def redeem() -> None:
        async with setup.sessions() as session:
            await setup.accounts.redeem(session, EMAIL, RESET, code, None)

    try:
        async with make_sessionmaker(other).begin() as guesses:
            await guesses.execute(select(User).where(User.email == EMAIL).with_for_update())
            spent = AddressThrottle(
                email=EMAIL, login_failures=0, code_failures=cap, code_window_started_at=utcnow()
            )
            guesses.add(spent)
            await guesses.flush()
            in_flight = asyncio.create_task(redeem())
            done, _ = await asyncio.wait({in_flight}, timeout=1.0)
            assert not done  # waiting for the account's lock
        with pytest.raises(TooManyCodeAttempts):
            await in_flight
    finally:
        await other.dispose()


@pytest.mark.parametrize("meanwhile", ["demoted", "disabled"])
async def test_an_admin_demoted_since_the_request_began_changes_no_one(
    setup: Setup, meanwhile: str
) -> None:
    """Admin rights were read when the request began. Two admins removing each other's
    role at once both succeeded and left no admin; an admin disabled meanwhile could still
    act. They are now read again under the rows' locks."""
    async with setup.sessions.begin() as session:
        admin = User(email="admin@example.com", password_hash="x", roles=["admin"])
        session.add(admin)
    caller = Caller(admin, uuid.uuid4())  # as authenticated: an admin
    change: dict[str, object] = (  # what another admin's request committed since
        {"roles": []} if meanwhile == "demoted" else {"disabled_at": utcnow()}
    )
    async with setup.sessions.begin() as session:
        await session.execute(update(User).where(User.id == admin.id).values(change))
    target = (await _caller(setup.sessions)).user.id
    users = UserAdmin(setup.sessions, cast(Any, SimpleNamespace(notify=lambda: None)))
    with pytest.raises(Forbidden):
        await users.update(caller, target, disabled=True)
    async with setup.sessions() as session:
        assert await session.scalar(select(User.disabled_at).where(User.id == target)) is None


async def test_two_step_turned_on_during_the_hash_is_asked_for(setup: Setup) -> None:
    """An app confirmed while the password was being hashed: the login, claimed after it,
    hands back an mfa_token, not a session."""

    async def turn_on(session: AsyncSession) -> None:
        user_id = await session.scalar(select(User.id).where(User.email == EMAIL))
        session.add(TotpFactor(user_id=user_id, secret="sealed", confirmed_at=utcnow()))

    setup.hasher.meddle = turn_on
    with pytest.raises(MfaRequired):
        await setup.accounts.login(EMAIL, PASSWORD, Client())
    assert await count(setup.sessions, UserSession) == 0
    assert await count(setup.sessions, RefreshToken) == 0
    assert await count(setup.sessions, MfaChallenge) == 1


async def test_two_step_confirmed_while_the_claim_waits_is_asked_for(pg_setup: Setup) -> None:
    """On PostgreSQL: the app's confirmation holds the account's lock when the login's
    claim comes; the claim waits, then must see the app. (Read in the claim's own
    statement, it did not: that statement's snapshot predates the confirmation.)"""
    sessions = pg_setup.sessions
    holding = asyncio.Event()

    async def confirm() -> None:
        async with sessions.begin() as session:
            user = await session.scalar(select(User).where(User.email == EMAIL).with_for_update())
            assert user is not None
            session.add(TotpFactor(user_id=user.id, secret="sealed", confirmed_at=utcnow()))
            await session.flush()
            holding.set()
            await _until_a_statement_waits_for_a_lock(sessions)

    confirming: asyncio.Task[None] | None = None

    async def meddle(_: AsyncSession) -> None:
        nonlocal confirming
        confirming = asyncio.create_task(confirm())
        await holding.wait()

    pg_setup.hasher.meddle = meddle
    with pytest.raises(MfaRequired):
        await pg_setup.accounts.login(EMAIL, PASSWORD, Client())
    assert confirming is not None
    await confirming
    assert await count(sessions, UserSession) == 0


async def _until_a_statement_waits_for_a_lock(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with engine_of(sessions).connect() as conn:
        for _ in range(300):
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            if waiting:
                return
            # A transaction reads pg_stat_activity once: end it to see the next change.
            await conn.rollback()
            await asyncio.sleep(0.1)
    raise AssertionError("the login's claim never waited for the confirmation's lock")
