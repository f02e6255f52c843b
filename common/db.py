"""Async SQLAlchemy engine set-up: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Insert, Table, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# A pooled connection unused for this long is checked before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0
# How long a new PostgreSQL connection may take (unless the URL's `timeout` says).
CONNECT_TIMEOUT_SECONDS = 10.0


def ensure_sqlite_dir(database_url: str) -> None:
    """Create the parent folder of a SQLite database file so the default URL just works."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> AsyncEngine:
    """An engine whose errors never show their statements' values: those may be a code
    (the outbox's payload), a password hash or a refresh token's hash, and an error's
    text goes to the log."""
    ensure_sqlite_dir(url)
    if url.startswith("sqlite"):
        from common.sqlite import install, lock_for_update

        install()  # one thread hop per statement (common/sqlite.py)
        # One connection: SQLite has one writer anyway, and queueing in asyncio beats
        # several connections sleeping in SQLite's busy handler (up to 100 ms per retry).
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            hide_parameters=True,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets readers run beside the one writer; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        lock_for_update(engine.sync_engine)  # FOR UPDATE holds across processes too
        return engine
    # asyncpg waits 60 s for a server that does not answer; a request should not.
    timeout = {} if "timeout" in make_url(url).query else {"timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_async_engine(
        url, pool_size=10, max_overflow=10, hide_parameters=True, connect_args=timeout
    )
    unreachable_on_connect(engine.sync_engine)
    ping_when_idle(engine.sync_engine)
    return engine


class DatabaseUnreachable(Exception):
    """No connection to the database could be made: the server refused it, could not be
    found or did not answer in time, or said it takes none now (starting up, shutting
    down, out of connection slots). No statement of the work that wanted it ran on it.
    Not an OSError, although one usually causes it: code that retries a broker on OSError
    must not take the database's absence for the broker's."""


# Answers at connect that mean "not now", not "configured wrong" (a wrong password or
# database name stays the error it is): class 08, connection exceptions; too many
# connections; shutting down, crashed, or starting up.
_NOT_NOW = ("08", "53300", "57P01", "57P02", "57P03")


def unreachable_on_connect(engine: Engine) -> None:
    """Connecting fails with `DatabaseUnreachable` where the server cannot be reached.

    asyncpg raises a plain `OSError` when the server refuses or cannot be resolved, which
    SQLAlchemy passes on unwrapped: nothing would tell it from any other I/O error. A TLS
    failure (an untrusted certificate) is an `OSError` too, but the configuration's fault,
    so it stays what it is.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Dialect, _: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except ssl.SSLError:
            raise
        except OSError as exc:  # refused, unknown host, timed out, closed at once
            cause: Exception = exc
        except dialect.loaded_dbapi.Error as exc:
            if not str(getattr(exc, "sqlstate", None) or "").startswith(_NOT_NOW):
                raise
            cause = exc
        raise DatabaseUnreachable(f"{type(cause).__name__}: {cause}") from cause


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it has been idle a while.

    SQLAlchemy's `pool_pre_ping` checks every checkout, and for asyncpg a check is three
    round trips (BEGIN, an empty query, ROLLBACK), paid by every request. A connection
    that a server restart, an idle timeout or `pg_terminate_backend` killed has been idle
    while it happened, so it is still caught here; one that was in use a moment ago is
    not checked. When a check fails, every connection pooled before it is replaced too
    (the server probably restarted), and the checkout goes on with a new one.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(_: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_conn, None):
                raise  # not a dead connection: the checkout fails, as pre-ping's did
            raise InvalidatePoolError() from exc
        if not alive:
            raise InvalidatePoolError()


def upsert(
    session: AsyncSession, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> Insert:
    """An INSERT of the row `key` with `values`, or where that row exists, an UPDATE of it
    to `values`: one statement, so two at once neither fail nor leave two rows."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # not the PostgreSQL dialect where SQLite is used
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(table).values({**key, **values})
    changed = {name: statement.excluded[name] for name in values}
    return statement.on_conflict_do_update(index_elements=list(key), set_=changed)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a sessionmaker is bound to: hot paths run Core statements on it."""
    bind = sessions.kw["bind"]
    assert isinstance(bind, AsyncEngine)
    return bind


async def migrate(engine: AsyncEngine, base: type[DeclarativeBase]) -> None:
    """Upgrade the service owning `base` (by its package) to its newest Alembic revision."""
    from common.migrations import upgrade  # Alembic loads only where a schema is managed

    await upgrade(engine, base.__module__.split(".")[0], base.metadata)


class MigrationFailed(RuntimeError):
    """The child process upgrading the database failed; its stderr says why."""


async def migrate_apart(engine: AsyncEngine, base: type[DeclarativeBase]) -> None:
    """`migrate`, in a child process (`python -m common.migrations`), which is how the
    services upgrade at start-up: Alembic, Mako and the migration scripts (~14 MB) never
    load into a serving process. The URL goes by environment, not the command line, so a
    password does not show in `ps`."""
    env = {
        **os.environ,
        "MIGRATE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "MIGRATE_BASE": f"{base.__module__}:{base.__qualname__}",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "common.migrations",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate()
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip()[-3000:]
        raise MigrationFailed(f"migrating {base.__module__} failed:\n{tail}")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
