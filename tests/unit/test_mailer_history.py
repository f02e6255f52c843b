"""The delivery table: times read back as written and sort; a failed write commits nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import make_engine, migrate
from common.events import DeliveryStatus
from mailer_service.history import History, Outcome
from mailer_service.models import Base


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/mailer.db")
    await migrate(engine, Base)
    yield engine
    await engine.dispose()


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
    with pytest.raises(Exception, match="NOT NULL"):
        await history.record(bad)
    assert await history.seen(["e1"]) == {}
    await history.record(Outcome("e1", "a@example.com", "login_code", DeliveryStatus.SENT, 1, now))
    assert (await history.seen(["e1"]))["e1"].status == "sent"
