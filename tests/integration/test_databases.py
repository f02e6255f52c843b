"""Schemas come from Alembic migrations, on SQLite and on the machine's PostgreSQL: the
migrated schema equals the models, upgrading twice is a no-op, a database made before
migrations is refused with a clear message, and the mailer's delivery store (upserts,
group commits) behaves the same on both, and two processes doing a read-check-write at
once (counting an address's first failures, seeding or editing the catalogue) take
turns. PostgreSQL cases skip, with the reason, where no server answers on 127.0.0.1:5432
(or TEST_POSTGRES_DSN), except under CI=true."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Connection,
    MetaData,
    column,
    event,
    func,
    insert,
    inspect,
    select,
    table,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth_service import refresh
from auth_service.config import AuthSettings
from auth_service.leader import RelayLock
from auth_service.models import AddressThrottle, RefreshToken, User, UserSession
from auth_service.throttle import AddressGuard
from auth_service.tokens import hash_refresh_token
from auth_service.user_sessions import Client, end_sessions, session_row
from common import db
from common.clock import utcnow
from common.db import MigrationFailed, make_engine, make_sessionmaker, migrate_apart
from common.events import DeliveryStatus
from common.migrations import SERVICES, NotMigrated, config, upgrade, version_table
from films_service import favourites
from films_service.catalogue import (
    DELETE,
    EDIT,
    FilmNotFound,
    get_film,
    seed_if_empty,
    update_film,
)
from films_service.favourites import add_favourite
from films_service.models import Base as FilmsBase
from films_service.models import Favourite, Film
from mailer_service.history import History, Outcome
from tests.postgres import ADMIN_DSN, database_url, end_connections, fresh_engine

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite")
        yield engine
        await engine.dispose()
        return
    async with fresh_engine("migrations") as (_, engine):
        yield engine


@pytest.fixture
async def other(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """Another process's engine on the same database: its own connections (and, on
    SQLite, its own aiosqlite thread)."""
    second = make_engine(engine.url.render_as_string(hide_password=False))
    yield second
    await second.dispose()


def metadata_of(service: str) -> MetaData:
    return importlib.import_module(f"{service}.models").Base.metadata


def _differences(connection: Connection, service: str) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "version_table": version_table(service),
        },
    )
    return list(compare_metadata(context, metadata_of(service)))


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_build_exactly_the_models(engine: AsyncEngine, service: str) -> None:
    metadata = metadata_of(service)
    await upgrade(engine, service, metadata)
    await upgrade(engine, service, metadata)  # already at head: nothing to do
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences, service) == []
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert tables == {*metadata.tables, version_table(service)}


async def test_a_database_made_before_migrations_is_refused(engine: AsyncEngine) -> None:
    metadata = metadata_of("films_service")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    with pytest.raises(NotMigrated, match="predates migrations"):
        await upgrade(engine, "films_service", metadata)


async def test_services_migrate_in_a_child_process(engine: AsyncEngine) -> None:
    """What the services run at start-up: the upgrade happens in `python -m
    common.migrations`, and its failure reaches the caller with the child's reason."""
    from films_service.models import Base as FilmsBase

    await migrate_apart(engine, FilmsBase)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences, "films_service") == []
    await migrate_apart(engine, FilmsBase)  # at head already: nothing to do

    async with engine.begin() as conn:
        await conn.run_sync(
            lambda c: c.exec_driver_sql(f"DROP TABLE {version_table('films_service')}")
        )
    with pytest.raises(MigrationFailed, match="predates migrations"):
        await migrate_apart(engine, FilmsBase)


async def test_workers_starting_together_on_sqlite_migrate_once(tmp_path: Path) -> None:
    """Two workers of one instance upgrade one SQLite file at the same moment: one
    migrates, the other waits and finds nothing to do; neither fails. (On PostgreSQL an
    advisory lock does the same across processes; Alembic's global context forbids two
    migrations in one process, so that is proven by the topology's replicas.)"""
    url = f"sqlite+aiosqlite:///{tmp_path}/workers.db"
    engine, other = make_engine(url), make_engine(url)
    try:
        metadata = metadata_of("auth_service")
        await asyncio.gather(*(upgrade(e, "auth_service", metadata) for e in (engine, other)))
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences, "auth_service") == []
    finally:
        await engine.dispose()
        await other.dispose()


async def test_services_can_share_one_database(engine: AsyncEngine) -> None:
    for service in SERVICES:
        await upgrade(engine, service, metadata_of(service))
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {version_table(s) for s in SERVICES} <= tables


async def test_two_processes_count_the_first_failures_of_an_address(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """Two processes (an engine each) record a failed login for an address with no record
    yet, at once. On PostgreSQL both found no row and both inserted one: the second hit
    the primary key, a 500 for a wrong password. Now the second waits for the first's row
    and counts on it; on SQLite its transaction waits for the first's (BEGIN IMMEDIATE)."""
    await upgrade(engine, "auth_service", metadata_of("auth_service"))
    guard, email = AddressGuard(AuthSettings()), "first-failures@example.com"
    async with make_sessionmaker(engine).begin() as first:
        await guard.login_failed(first, email, utcnow())
        await first.flush()  # its row is written, not committed

        async def second() -> None:
            async with make_sessionmaker(other).begin() as session:
                await guard.login_failed(session, email, utcnow())

        meanwhile = asyncio.create_task(second())
        # Long enough for the second to reach the row, had it not been made to wait.
        done, _ = await asyncio.wait({meanwhile}, timeout=1.0)
        assert not done
    await meanwhile
    async with engine.connect() as conn:
        counted = select(AddressThrottle.login_failures).where(AddressThrottle.email == email)
        assert (await conn.execute(counted)).scalar_one() == 2


async def test_a_wrong_code_counts_on_what_another_process_counted(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """A session that read the address's budget earlier without a lock, and still holds
    that row, counts a wrong code on the locked read, not on its own copy: a failure
    another process committed in between counts too (it used to write 4 over 4)."""
    await upgrade(engine, "auth_service", metadata_of("auth_service"))
    guard, email = AddressGuard(AuthSettings()), "budget@example.com"
    counted = select(AddressThrottle.code_failures).where(AddressThrottle.email == email)
    for _ in range(3):
        async with make_sessionmaker(engine).begin() as session:
            await guard.code_failed(session, email, utcnow())
    async with make_sessionmaker(engine).begin() as redeeming:
        held = await redeeming.get(AddressThrottle, email)  # no lock, as check_codes reads
        assert held is not None and held.code_failures == 3
        async with make_sessionmaker(other).begin() as meanwhile:
            await guard.code_failed(meanwhile, email, utcnow())  # 4, committed
        await guard.code_failed(redeeming, email, utcnow())
    async with engine.connect() as conn:
        assert (await conn.execute(counted)).scalar_one() == 5


async def _rows(engine: AsyncEngine, model: type[FilmsBase]) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(model))).scalar_one()


async def test_films_instances_starting_together_seed_once(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    await upgrade(engine, "films_service", metadata_of("films_service"))
    seeded = await asyncio.gather(
        seed_if_empty(make_sessionmaker(engine)), seed_if_empty(make_sessionmaker(other))
    )
    films = await _rows(engine, Film)
    assert sorted(seeded) == [0, films] and films > 0


async def _film_held_by_an_edit(engine: AsyncEngine, edit: str) -> tuple[int, AsyncSession]:
    """A film, and a session holding it mid-edit (`genres` or `delete`), not committed."""
    await upgrade(engine, "films_service", metadata_of("films_service"))
    async with make_sessionmaker(engine).begin() as session:
        film = Film(title="Held", year=2000, director="D", runtime_minutes=90)
        film.genres = ["Drama", "War"]
        session.add(film)
    holder = make_sessionmaker(engine)()
    if edit == "delete":
        await holder.delete(await get_film(holder, film.id, lock=DELETE))
    else:
        (await get_film(holder, film.id, lock=EDIT)).genres = ["Drama", "Comedy"]
    await holder.flush()
    return film.id, holder


def _sent(engine: AsyncEngine, verb: str) -> asyncio.Event:
    """Set once `engine` has sent a statement beginning with `verb`."""
    sent = asyncio.Event()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_c: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(verb):
            sent.set()

    return sent


async def _after(holder: AsyncSession, second: asyncio.Task[T], sent: asyncio.Event) -> T:
    """`second`'s result once the holder commits; it must have waited until then from
    the statement `sent` marks (on a slow machine it may not have got there sooner)."""
    async with holder:
        await asyncio.wait_for(sent.wait(), 30)
        # Long enough for the second to write on the old film, had it not had to wait.
        done, _ = await asyncio.wait({second}, timeout=1.0)
        assert not done
        await holder.commit()
    return await second


@pytest.mark.parametrize("edit", ["genres", "delete"])
async def test_films_an_edit_waits_for_another_edit_of_the_film(
    engine: AsyncEngine, other: AsyncEngine, edit: str
) -> None:
    """The second edit read the film without a lock and wrote on what the first had
    replaced: a 500 on both databases (StaleDataError: the genre rows or the film it
    meant to change were gone), where its edit, or a 404 once the film was deleted, was
    due."""
    film_id, holder = await _film_held_by_an_edit(engine, edit)
    read = _sent(other, "SELECT")  # with a lock now, without one before
    async with make_sessionmaker(other)() as session:
        change = update_film(session, film_id, {"genres": ["Drama", "Crime"]})
        editing = asyncio.create_task(change)
        if edit == "delete":
            with pytest.raises(FilmNotFound):
                await _after(holder, editing, read)
            return
        assert (await _after(holder, editing, read)).genres == ["Drama", "Crime"]
    async with make_sessionmaker(engine)() as session:
        assert (await get_film(session, film_id)).genres == ["Drama", "Crime"]


async def test_films_a_favourite_of_a_film_deleted_meanwhile_is_not_found(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """The insert's foreign key failed once the delete committed, and was taken for the
    same PUT in parallel: a 204, and nothing saved."""
    film_id, holder = await _film_held_by_an_edit(engine, "delete")
    # On PostgreSQL it read the film before the delete committed; SQLite's one writer
    # holds it from its first statement.
    waiting = _sent(other, "INSERT" if engine.dialect.name == "postgresql" else "SELECT")
    async with make_sessionmaker(other)() as session:
        adding = asyncio.create_task(add_favourite(session, "someone", film_id))
        with pytest.raises(FilmNotFound):
            await _after(holder, adding, waiting)
    assert await _rows(engine, Favourite) == 0


async def test_films_a_favourite_of_a_film_being_edited_is_added(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """On PostgreSQL at once: an edit's FOR NO KEY UPDATE leaves the KEY SHARE lock of
    the favourite's foreign key free. SQLite has one writer: once the edit commits."""
    film_id, holder = await _film_held_by_an_edit(engine, "genres")
    waiting = _sent(other, "SELECT")
    async with make_sessionmaker(other)() as session:
        adding = asyncio.create_task(add_favourite(session, "someone", film_id))
        if engine.dialect.name == "postgresql":
            await asyncio.wait_for(adding, 30)
            async with holder:
                await holder.commit()
        else:
            await _after(holder, adding, waiting)
    assert await _rows(engine, Favourite) == 1


async def test_films_favourites_added_at_once_stop_at_the_cap(
    engine: AsyncEngine, other: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap was counted before the insert, by a read that took no lock: one user's
    PUTs in flight at once each saw room for one more, on both databases. The second now
    waits for the first, then finds the cap reached."""
    monkeypatch.setattr(favourites, "MAX_FAVOURITES", 1)
    await upgrade(engine, "films_service", metadata_of("films_service"))
    async with make_sessionmaker(engine).begin() as session:
        films = [Film(title=t, year=2000, director="D", runtime_minutes=90) for t in "AB"]
        session.add_all(films)
    holder = make_sessionmaker(engine)()
    await favourites.one_user_at_a_time(holder, "someone")  # the first PUT, mid-way
    holder.add(Favourite(user_id="someone", film_id=films[0].id))
    await holder.flush()
    if engine.dialect.name == "postgresql":  # the lock is the user's: others go on
        async with make_sessionmaker(other)() as session:
            await asyncio.wait_for(add_favourite(session, "someone else", films[1].id), 30)
    waiting = _sent(other, "SELECT")
    async with make_sessionmaker(other)() as session:
        adding = asyncio.create_task(add_favourite(session, "someone", films[1].id))
        with pytest.raises(favourites.TooManyFavourites):
            await _after(holder, adding, waiting)
    async with engine.connect() as conn:
        mine = select(func.count()).where(Favourite.user_id == "someone")
        assert (await conn.execute(mine)).scalar_one() == 1


async def test_ending_a_session_while_it_refreshes_does_not_deadlock(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """A refresh locks its token, then touches its session. Ending the session locked the
    session, then the tokens: on PostgreSQL the two deadlocked (one failed after 1 s, a
    500). Ending now takes them in the refresh's order, and waits for it."""
    await upgrade(engine, "auth_service", metadata_of("auth_service"))
    now, user_id = utcnow(), uuid.uuid4()
    family = session_row(user_id, Client(), now, ("pwd",))
    async with make_sessionmaker(engine).begin() as session:
        session.add(User(id=user_id, email="ending@example.com", password_hash="x", roles=[]))
        await session.flush()
        session.add(UserSession(**family))
        await session.flush()
        expires = now + timedelta(days=1)
        token = {"user_id": user_id, "family_id": family["id"], "expires_at": expires}
        session.add(RefreshToken(**token, token_hash=hash_refresh_token("old")))

    async def end() -> None:
        async with make_sessionmaker(other).begin() as session:
            await end_sessions(session, UserSession.id == family["id"])

    # What RefreshTokens.rotate runs, a statement at a time, so the end comes between.
    async with engine.begin() as refreshing:
        rotate = {"hash": hash_refresh_token("old"), "now": now}
        assert (await refreshing.execute(refresh._ROTATE, rotate)).one_or_none()
        ending = asyncio.create_task(end())
        # Long enough for the end to take what it takes first, had it not had to wait.
        done, _ = await asyncio.wait({ending}, timeout=1.0)
        assert not done
        touch = {"sid": family["id"], "now": now, "ip": None, "ua": None}
        assert (await refreshing.execute(refresh._TOUCH, touch)).rowcount == 1
    await ending
    async with engine.connect() as conn:
        ended = select(UserSession.ended_at).where(UserSession.id == family["id"])
        assert (await conn.execute(ended)).scalar_one() is not None


async def test_a_relay_lock_given_back_can_be_taken_by_another_instance(
    engine: AsyncEngine, other: AsyncEngine
) -> None:
    """On PostgreSQL, giving the lock back closed its connection, which only returned it
    to the pool with the session's advisory lock still held: once a relay had failed, no
    instance could relay again."""
    first, second = RelayLock(engine), RelayLock(other)
    assert await first.acquire(lambda: None)
    assert not await second.acquire(lambda: None)
    await first.release()
    assert await second.acquire(lambda: None)
    await second.release()
    assert await first.acquire(lambda: None)  # and back again
    await first.release()


async def test_postgres_connections_the_server_ended_are_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pooled connection that idled a while is checked before use (not on every
    checkout: that costs each request three round trips), so one the server ended
    meanwhile (a restart, an idle timeout) is replaced, not handed to a request. One used
    a moment ago is not checked: a failure on it is a lost connection, which the services
    answer with 503 (tests/unit/test_database_errors.py) and the pool then replaces."""
    async with fresh_engine("pings") as (name, engine):

        async def one() -> int | None:
            async with engine.connect() as conn:
                found = (await conn.execute(select(1))).scalar()
                await asyncio.sleep(0.05)  # held together: the pool keeps several
                return found

        assert list(await asyncio.gather(one(), one(), one())) == [1, 1, 1]
        assert await end_connections(name) == 3
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every one idled long enough
        assert list(await asyncio.gather(one(), one(), one())) == [1, 1, 1]

        assert await end_connections(name) == 3
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)  # all in use a moment ago
        with pytest.raises(DBAPIError) as lost:
            await one()
        assert lost.value.connection_invalidated
        assert list(await asyncio.gather(one(), one(), one())) == [1, 1, 1]  # pool renewed


async def test_postgres_saying_not_now_at_connect_is_unreachable_but_a_wrong_role_is_not() -> None:
    """A server out of connection slots (here: a role allowed none) is unreachable for
    now, which the services answer with 503; a role that does not exist is the
    configuration's fault and stays the database error it is (a 500, logged)."""
    async with fresh_engine("connects") as (name, _):
        role = f"no_slots_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
            url = make_url(database_url(name)).set(password=None)
            full = make_engine(url.set(username=role).render_as_string())
            wrong = make_engine(url.set(username="nobody_here").render_as_string())
            try:
                with pytest.raises(db.DatabaseUnreachable, match="too many connections"):
                    async with full.connect():
                        pass
                with pytest.raises(DBAPIError, match="nobody_here"):
                    async with wrong.connect():
                        pass
            finally:
                await full.dispose()
                await wrong.dispose()
        finally:
            await admin.execute(f"DROP ROLE {role}")
            await admin.close()


async def test_delivery_store_on_each_backend(engine: AsyncEngine) -> None:
    await upgrade(engine, "mailer_service", metadata_of("mailer_service"))
    history = History(engine)
    queued = utcnow()

    def outcome(event_id: str, status: DeliveryStatus, attempt: int) -> Outcome:
        return Outcome(event_id, "a@example.com", "email_verification", status, attempt, queued)

    # Concurrent records are group-committed; two outcomes of one event in one group too.
    await asyncio.gather(
        history.record(outcome("e1", DeliveryStatus.RETRYING, 1)),
        history.record(outcome("e2", DeliveryStatus.SENT, 1)),
        history.record(outcome("e3", DeliveryStatus.FAILED, 1)),
    )
    await asyncio.gather(
        history.record(outcome("e1", DeliveryStatus.RETRYING, 2)),
        history.record(outcome("e1", DeliveryStatus.SENT, 3)),
    )
    seen = await history.seen(["e1", "e2", "e3", "e4"])
    assert {k: (v.status, v.attempts) for k, v in seen.items()} == {
        "e1": ("sent", 3),
        "e2": ("sent", 1),
        "e3": ("failed", 1),
    }
    assert seen["e1"].covers(1) and not seen.get("e4")
    items = {i["event_id"]: i for i in await history.for_recipient("a@example.com", 10)}
    assert [h["outcome"] for h in items["e1"]["history"]] == ["retrying", "retrying", "sent"]
    assert items["e1"]["queued_at"] == queued
    assert await history.for_recipient("b@example.com", 10) == []
    # A deleted account's address is forgotten, attempts and all; twice is harmless.
    for _ in range(2):
        await history.forget("a@example.com")
    assert await history.for_recipient("a@example.com", 10) == []
    assert await history.seen(["e1", "e2", "e3"]) == {}


async def test_auth_0003_makes_a_session_of_every_refresh_family(engine: AsyncEngine) -> None:
    """Logins made before sessions existed become sessions: live while a token is. And
    (0004) their revoked tokens count as rotated: a copy presented again is a theft."""
    metadata = metadata_of("auth_service")
    users, tokens, sessions = (metadata.tables[t] for t in ("users", "refresh_tokens", "sessions"))
    # The columns refresh_tokens had at 0002 (the model's later ones have defaults).
    tokens_0002 = table(
        "refresh_tokens",
        *(column(c.name, c.type) for c in tokens.c if c.name != "superseded"),
    )
    user, live, ended = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    t0 = utcnow().replace(microsecond=0)
    later = t0 + timedelta(minutes=5)

    def at_0002_with_logins(conn: Connection) -> None:
        command.upgrade(config("auth_service", conn), "0002")
        conn.execute(insert(users).values(id=user, email="old@example.com", password_hash="x"))
        rows = [  # (family, created, revoked): one login rotated once, one logged out
            (live, t0, later),
            (live, later, None),
            (ended, t0, later),
        ]
        for family, created, revoked in rows:
            conn.execute(
                insert(tokens_0002).values(
                    user_id=user,
                    family_id=family,
                    token_hash=uuid.uuid4().hex,
                    created_at=created,
                    expires_at=t0 + timedelta(days=14),
                    revoked_at=revoked,
                )
            )

    async with engine.begin() as conn:
        await conn.run_sync(at_0002_with_logins)
    await upgrade(engine, "auth_service", metadata)
    async with engine.connect() as conn:
        found = {
            row.id: row
            for row in await conn.execute(
                select(sessions.c.id, sessions.c.user_id, sessions.c.created_at,
                       sessions.c.last_used_at, sessions.c.ended_at)
            )
        }  # fmt: skip
    assert set(found) == {live, ended}
    assert (found[live].created_at, found[live].last_used_at) == (t0, later)
    assert found[live].ended_at is None
    assert found[ended].ended_at == later
    assert {row.user_id for row in found.values()} == {user}
    async with engine.connect() as conn:
        superseded = await conn.execute(select(tokens.c.superseded).distinct())
        assert superseded.scalars().all() == [False]
