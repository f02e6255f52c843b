"""Progressive login lockout and the per-address budget of wrong codes.

Both stay on when AUTH_RATE_LIMIT_ENABLED=false: they protect accounts, not capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Insert, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from auth_service.config import AuthSettings
from auth_service.errors import AccountLocked, TooManyCodeAttempts
from auth_service.models import AddressThrottle, Base

# Core statements (login runs on a plain connection, see Accounts.login).
_THROTTLE = Base.metadata.tables[AddressThrottle.__tablename__]
_LOGIN_STATE = select(_THROTTLE.c.locked_until, _THROTTLE.c.login_failures).where(
    _THROTTLE.c.email == bindparam("address")
)
_LOGIN_STATE_LOCKED = _LOGIN_STATE.with_for_update()
_LOGIN_CLEARED = (
    update(_THROTTLE)
    .where(_THROTTLE.c.email == bindparam("address"))
    .values(login_failures=0, locked_until=None, last_login_failure_at=None)
)


def _insert_if_missing(session: AsyncSession, email: str) -> Insert:
    values = {"email": email, "login_failures": 0, "code_failures": 0}
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(_THROTTLE).values(values)
        return pg.on_conflict_do_nothing(index_elements=[_THROTTLE.c.email])
    from sqlalchemy.dialects import sqlite  # not the PostgreSQL dialect where SQLite is used

    lite = sqlite.insert(_THROTTLE).values(values)
    return lite.on_conflict_do_nothing(index_elements=[_THROTTLE.c.email])


@dataclass(frozen=True)
class Failure:
    """A counted failure: the lockout it caused (s, 0 for none), and the remaining seconds
    of one in force before it (0 for none), which is then the answer, whatever the
    password was, so that a right guess cannot be told from a wrong one by its answer."""

    locked_for: int
    already_locked: int


def _remaining(locked_until: datetime | None, now: datetime) -> int:
    if locked_until is None or locked_until <= now:
        return 0
    return math.ceil((locked_until - now).total_seconds())


@dataclass
class AddressGuard:
    settings: AuthSettings

    @staticmethod
    async def _row(
        session: AsyncSession, email: str, create: bool = False
    ) -> AddressThrottle | None:
        """The address's row, locked; with `create`, made first where there is none. Another
        process may be making it at the same moment (its first failure too): the insert
        then waits for that one and does nothing, and the row read after it is theirs."""
        # populate_existing: a copy this session still holds from a read without the lock
        # is refreshed by the locked read, not kept, or its count would be written back
        # over a failure another request committed meanwhile.
        row = await session.get(
            AddressThrottle, email, with_for_update=True, populate_existing=True
        )
        if row is None and create:
            await session.execute(_insert_if_missing(session, email))
            row = await session.get(
                AddressThrottle, email, with_for_update=True, populate_existing=True
            )
        return row

    # -- login ----------------------------------------------------------------------------

    async def check_login(
        self, db: AsyncSession | AsyncConnection, email: str, now: datetime, lock: bool = False
    ) -> bool:
        """Raise AccountLocked while the address is locked; True if it has failures on record.
        With `lock`, the row is read FOR UPDATE: a failure committing now is waited for."""
        state = _LOGIN_STATE_LOCKED if lock else _LOGIN_STATE
        row = (await db.execute(state, {"address": email})).one_or_none()
        if row is not None and (remaining := _remaining(row.locked_until, now)):
            raise AccountLocked(remaining)
        return row is not None and row.login_failures > 0

    async def login_failed(self, session: AsyncSession, email: str, now: datetime) -> Failure:
        """Count a failure: the lockout it caused, and the one already in force (a guess
        that passed the check before its hash while others locked the address)."""
        s = self.settings
        row = await self._row(session, email, create=True)
        assert row is not None
        already = _remaining(row.locked_until, now)
        reset = timedelta(seconds=s.lockout_reset_seconds)
        if row.last_login_failure_at is not None and now - row.last_login_failure_at > reset:
            row.login_failures = 0
        row.login_failures = (row.login_failures or 0) + 1
        row.last_login_failure_at = now
        over = row.login_failures - s.lockout_threshold
        if over < 0:
            return Failure(0, already)
        seconds = min(s.lockout_max_seconds, (over + 1) * s.lockout_step_seconds)
        row.locked_until = now + timedelta(seconds=seconds)
        return Failure(seconds, already)

    async def login_succeeded(self, db: AsyncSession | AsyncConnection, email: str) -> None:
        await db.execute(_LOGIN_CLEARED, {"address": email})

    # -- codes ----------------------------------------------------------------------------

    def _window(self) -> timedelta:
        return timedelta(seconds=self.settings.code_failure_window_seconds)

    def check_budget(self, started: datetime | None, failures: int, now: datetime) -> None:
        """TooManyCodeAttempts while the wrong codes counted since `started` have spent the
        budget: an address's, or an authenticator app's (two_step.py), by the same rule."""
        if started is None:
            return
        ends = started + self._window()
        if ends > now and failures >= self.settings.code_max_failures_per_address:
            raise TooManyCodeAttempts(math.ceil((ends - now).total_seconds()))

    def count_failure(
        self, started: datetime | None, failures: int | None, now: datetime
    ) -> tuple[datetime, int]:
        """The window's start and count after one more wrong code (a new window once the
        last one is over)."""
        if started is None or started + self._window() <= now:
            return now, 1
        return started, (failures or 0) + 1

    async def check_codes(self, session: AsyncSession, email: str, now: datetime) -> None:
        row = await session.get(AddressThrottle, email)
        if row is not None:
            self.check_budget(row.code_window_started_at, row.code_failures, now)

    async def code_failed(self, session: AsyncSession, email: str, now: datetime) -> None:
        row = await self._row(session, email, create=True)
        assert row is not None
        row.code_window_started_at, row.code_failures = self.count_failure(
            row.code_window_started_at, row.code_failures, now
        )
