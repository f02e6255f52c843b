"""The delivery table, on SQLite and on the machine's PostgreSQL (where each group of
outcomes is one statement): times read back as written and sort; a failed write commits
nothing; one bad outcome does not sink the others of its group."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import make_engine, migrate
from common.events import DeliveryStatus
from mailer_service.dispatch import _may_pass
from mailer_service.history import History, Outcome
from mailer_service.models import Base
from mailer_service.smtp import SendError
from tests.postgres import fresh_engine

NOT_NULL = "(?i)not.null"  # SQLite's "NOT NULL constraint failed", PostgreSQL's "not-null"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/mailer.db")
        await migrate(engine, Base)
        yield engine
        await engine.dispose()
        return
    async with fresh_engine("history") as (_, engine):
        await migrate(engine, Base)
        yield engine


async def test_times_read_back_as_written_and_sort(engine: AsyncEngine) -> None:
    history = History(engine)
    whole = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)  # no microseconds: still sortable
    later = whole + timedelta(microseconds=7)
    for event_id, queued in (("early", whole), ("late", later)):
        await history.record(
            Outcome(
                event_id, "a@example.com", "login_code", DeliveryStatus.SENT, 1, queued, at=queued
            )
        )
    items = await history.for_recipient("a@example.com", 10)
    assert [(i["event_id"], i["queued_at"]) for i in items] == [("late", later), ("early", whole)]
    assert items[1]["history"] == [{"attempt": 1, "outcome": "sent", "error": None, "at": whole}]
    assert (await history.seen(["early"]))["early"].updated_at == whole


async def test_a_failed_write_commits_nothing_and_the_next_one_works(engine: AsyncEngine) -> None:
    history = History(engine)
    now = datetime.now(UTC)
    bad = Outcome("e1", "a@example.com", "login_code", DeliveryStatus.SENT, 1, now)
    object.__setattr__(bad, "recipient", None)  # NOT NULL: the upsert fails
    with pytest.raises(Exception, match=NOT_NULL):
        await history.record(bad)
    assert await history.seen(["e1"]) == {}
    await history.record(Outcome("e1", "a@example.com", "login_code", DeliveryStatus.SENT, 1, now))
    assert (await history.seen(["e1"]))["e1"].status == "sent"


async def test_one_bad_outcome_does_not_sink_the_group_committed_with_it(
    engine: AsyncEngine,
) -> None:
    """Outcomes arriving together are committed together; where that fails, each is tried
    alone, so only the bad one's sender hears of it."""
    history = History(engine)
    now = datetime.now(UTC)
    bad = Outcome("bad", "a@example.com", "login_code", DeliveryStatus.SENT, 1, now)
    object.__setattr__(bad, "recipient", None)  # NOT NULL
    good = Outcome("good", "b@example.com", "login_code", DeliveryStatus.SENT, 1, now)
    results = await asyncio.gather(
        history.record(bad), history.record(good), return_exceptions=True
    )
    assert isinstance(results[0], Exception) and results[1] is None
    assert set(await history.seen(["bad", "good"])) == {"good"}


async def test_a_value_too_long_is_never_stored_cut_short(engine: AsyncEngine) -> None:
    """PostgreSQL refuses it (SQLite keeps it whole): a cut id would miss the dedupe."""
    history = History(engine)
    long_id = "e" * 70  # the column holds 64
    outcome = Outcome(
        long_id, "a@example.com", "login_code", DeliveryStatus.SENT, 1, datetime.now(UTC)
    )
    try:
        await history.record(outcome)
    except DBAPIError:
        assert engine.dialect.name == "postgresql"
    assert await history.seen([long_id[:64]]) == {}


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_a_reply_with_any_bytes_makes_a_storable_reason() -> None:
    """aiosmtplib decodes replies with surrogateescape; PostgreSQL refuses NUL and lone
    surrogates, and the reason is stored and published."""
    reason = SendError("SMTP 550: caf\udce9\x00 refused", permanent=True).reason
    assert reason == "SMTP 550: caf? refused"
    reason.encode("utf-8")  # no lone surrogate left


@pytest.mark.parametrize(
    ("error", "passes"),
    [
        (DBAPIError("INSERT", {}, _PostgresError("22021")), False),  # a NUL in a text
        (DBAPIError("INSERT", {}, _PostgresError("22000")), False),  # a number too big
        (DBAPIError("INSERT", {}, _PostgresError("23502")), False),  # NOT NULL
        (DBAPIError("INSERT", {}, _PostgresError("08006")), True),  # the connection failed
        (DBAPIError("INSERT", {}, _PostgresError("57P01")), True),  # the server shut down
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (OSError("connection reset"), True),
        (sqlite3.IntegrityError("NOT NULL constraint failed"), False),
        (OverflowError("date value out of range"), False),
        (ValueError("naive datetime"), False),
        (StatementError("converting", "INSERT", {}, OverflowError("out of range")), False),
        (IntegrityError("INSERT", {}, Exception("unique")), False),
    ],
)
def test_which_failed_writes_are_tried_again(error: Exception, passes: bool) -> None:
    assert _may_pass(error) is passes
