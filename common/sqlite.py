"""One thread hop per SQLite statement instead of four.

aiosqlite runs each sqlite3 call on its own thread, and SQLAlchemy's adapter makes a
statement four calls: open a cursor, execute, fetch, close. Every call is a hand-off to
that thread and back, which on a busy core costs more than SQLite's own work (a token
refresh made 16 of them). This cursor does the four steps in one call on aiosqlite's
thread and keeps what they left (description, rows, rowcount, lastrowid), which is all
SQLAlchemy reads from a non-server-side cursor.

A `SELECT … FOR UPDATE` (`with_for_update`) that opens a transaction opens it with
`BEGIN IMMEDIATE`, sent in the same hop as the statement: SQLite's counterpart of the row
lock PostgreSQL takes, since SQLite drops the clause. The driver's default (pysqlite
begins only at the first write) left such a read outside the transaction, so a
read-check-write flow was not atomic between two processes on one file (`AUTH_WORKERS`,
or several instances): two failed logins could both read 7 failures and both write 8.
Other reads stay outside any transaction, as before (in WAL they never wait), and a
write still begins one itself. `lock_for_update(engine)` arranges it; make_engine calls it.

SQLAlchemy's pool rolls a connection back whenever it returns, even right after a commit
or a read that opened no transaction: one more hop per checkout, for an sqlite3
`rollback()` that does nothing then. Each hop here also records whether the connection
was left inside a transaction, and the adapter's rollback skips the hop when it was not.

`install()` puts the cursor in SQLAlchemy's aiosqlite connection class; make_engine
calls it. It relies on SQLAlchemy 2.1's shared asyncio cursor (`AsyncAdapt_dbapi_cursor` and its
`_execute_async`) and on aiosqlite's `Connection._execute` and `_conn` (which
SQLAlchemy's own adapter uses too), and checks them, so a version without them fails at
start-up, not at the first query.
"""

from __future__ import annotations

import collections
import functools
import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy import Connection, Dialect, event, select
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_cursor
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import EMPTY_DICT

# Connections whose next statement is a SELECT … FOR UPDATE (set just before it runs).
_FOR_UPDATE: weakref.WeakSet[object] = weakref.WeakSet()
# aiosqlite connections known to be outside a transaction: their last call, made through
# this module, left none open. Unknown (a new connection, a call that failed) counts as in.
_IDLE: weakref.WeakSet[object] = weakref.WeakSet()


class _Outcome:
    """What a statement left on its cursor, captured on aiosqlite's thread."""

    __slots__ = ("arraysize", "description", "idle", "lastrowid", "rowcount")

    def __init__(
        self, cursor: sqlite3.Cursor | None = None, conn: sqlite3.Connection | None = None
    ) -> None:
        self.arraysize = 1
        self.description = cursor.description if cursor else None
        self.rowcount = cursor.rowcount if cursor else -1
        self.lastrowid = cursor.lastrowid if cursor else None
        self.idle = conn is not None and not conn.in_transaction

    def close(self) -> None:
        """The sqlite3 cursor was closed on its thread already."""


def _lock(conn: sqlite3.Connection, for_update: bool) -> None:
    if for_update and not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")  # waits in SQLite's busy handler for the lock


def _execute(
    conn: sqlite3.Connection, sql: str, parameters: Any, for_update: bool
) -> tuple[_Outcome, list[Any]]:
    _lock(conn, for_update)
    cursor = conn.cursor()
    try:
        if parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return _Outcome(cursor, conn), rows
    finally:
        cursor.close()


def _executemany(
    conn: sqlite3.Connection, sql: str, seq: Sequence[Any], for_update: bool
) -> _Outcome:
    _lock(conn, for_update)
    cursor = conn.cursor()
    try:
        cursor.executemany(sql, seq)
        return _Outcome(cursor, conn)
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()
    _awaitable_cursor_close = False  # nothing is left open between calls

    def __init__(self, adapt_connection: Any) -> None:  # no hop to open a cursor
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _Outcome()  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def _for_update(self) -> bool:
        """True for a SELECT … FOR UPDATE: it begins the transaction if none is open."""
        if self._connection in _FOR_UPDATE:
            _FOR_UPDATE.discard(self._connection)
            return True
        return False

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            _IDLE.discard(self._connection)
            outcome, rows = await self._connection._execute(
                _execute,
                self._connection._conn,
                operation,
                parameters,
                self._for_update(),
            )
            _note(self._connection, outcome)
            self._cursor = outcome
            self._rows = collections.deque(rows)
        return None

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            _IDLE.discard(self._connection)
            outcome = await self._connection._execute(
                _executemany,
                self._connection._conn,
                operation,
                seq_of_parameters,
                self._for_update(),
            )
            _note(self._connection, outcome)
            self._cursor = outcome
        return None


def _note(connection: object, outcome: _Outcome) -> None:
    if outcome.idle:
        _IDLE.add(connection)


_adapter_commit = AsyncAdapt_aiosqlite_connection.commit
_adapter_rollback = AsyncAdapt_aiosqlite_connection.rollback
_adapter_cursor = AsyncAdapt_aiosqlite_connection.cursor


def _commit(self: AsyncAdapt_aiosqlite_connection) -> None:
    _IDLE.discard(self._connection)
    _adapter_commit(self)
    _IDLE.add(self._connection)


def _cursor(self: AsyncAdapt_aiosqlite_connection, server_side: bool = False) -> Any:
    if server_side:  # SQLAlchemy's own streaming cursor, which records nothing: unknown
        _IDLE.discard(self._connection)
    return _adapter_cursor(self, server_side)


def _rollback(self: AsyncAdapt_aiosqlite_connection) -> None:
    """No hop where sqlite3's rollback would do nothing: no transaction is open."""
    if self._connection in _IDLE:
        return
    _adapter_rollback(self)
    _IDLE.add(self._connection)


def _write(conn: sqlite3.Connection, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    if not conn.in_transaction:  # sqlite3 begins one itself only before some statements
        conn.execute("BEGIN")
    try:
        for sql, rows in steps:
            conn.executemany(sql, rows)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


@functools.lru_cache(maxsize=64)
def _compiled(
    statement: ClauseElement, keys: tuple[str, ...], dialect: Dialect
) -> tuple[str, tuple[str, ...], dict[str, Callable[[Any], Any]]]:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
    if missing := set(compiled.positiontup) - set(keys):  # defaults are not applied here
        raise ValueError(f"write_in_one_hop needs a value for {sorted(missing)}")
    processors = cast(dict[str, Callable[[Any], Any]], dict(compiled._bind_processors))
    return compiled.string, tuple(compiled.positiontup), processors


async def write_in_one_hop(
    engine: AsyncEngine, steps: Sequence[tuple[ClauseElement, Sequence[Mapping[str, Any]]]]
) -> None:
    """Each statement run for each of its rows, then COMMIT, as one transaction in one
    hand-off to aiosqlite's thread instead of one per statement and one for the commit:
    for a group of writes that needs nothing back (no rows, no rowcount). Each statement is
    compiled as SQLAlchemy's executemany would compile it (the first row's columns) and its
    values go through the same type processing; column defaults are not applied, so every
    row names every column that has one. An error is sqlite3's own, after the rollback."""
    batch: list[tuple[str, list[tuple[Any, ...]]]] = []
    for statement, rows in steps:
        if not rows:
            continue
        sql, names, processors = _compiled(statement, tuple(rows[0]), engine.dialect)
        batch.append(
            (
                sql,
                [
                    tuple(
                        processors[name](row[name]) if name in processors else row[name]
                        for name in names
                    )
                    for row in rows
                ],
            )
        )
    async with engine.connect() as conn:
        adapter: Any = (await conn.get_raw_connection()).dbapi_connection
        connection = adapter._connection
        async with adapter._execute_mutex:
            _IDLE.discard(connection)
            await connection._execute(_write, connection._conn, batch)
            _IDLE.add(connection)  # committed, or rolled back before the error came out


def lock_for_update(engine: Engine) -> None:
    """A SELECT … FOR UPDATE on `engine` (a make_engine SQLite engine) that starts a
    transaction begins it IMMEDIATE: the write lock is held from the read on."""

    @event.listens_for(engine, "before_cursor_execute")
    def _flag(conn: Connection, cursor: Any, _s: str, _p: Any, context: Any, _many: bool) -> None:
        if not isinstance(cursor, OneHopCursor):  # only it takes the flag off again
            return
        compiled = getattr(context, "compiled", None)
        statement = getattr(compiled, "statement", None)
        if getattr(statement, "_for_update_arg", None) is not None:
            _FOR_UPDATE.add(conn.connection.dbapi_connection._connection)  # type: ignore[union-attr]


def install() -> None:
    expected = (
        issubclass(AsyncAdapt_aiosqlite_cursor, AsyncAdapt_dbapi_cursor)
        and hasattr(AsyncAdapt_dbapi_cursor, "_execute_async")
        and hasattr(aiosqlite.Connection, "_execute")
        and isinstance(getattr(aiosqlite.Connection, "_conn", None), property)
    )
    if not expected:
        raise RuntimeError("SQLAlchemy or aiosqlite changed: review common/sqlite.py")
    if select().with_for_update()._for_update_arg is None:
        raise RuntimeError("SQLAlchemy changed how FOR UPDATE is kept: review common/sqlite.py")
    AsyncAdapt_aiosqlite_connection._cursor_cls = OneHopCursor
    AsyncAdapt_aiosqlite_connection.commit = _commit  # type: ignore[method-assign]
    AsyncAdapt_aiosqlite_connection.rollback = _rollback  # type: ignore[method-assign]
    AsyncAdapt_aiosqlite_connection.cursor = _cursor  # type: ignore[method-assign,assignment]
