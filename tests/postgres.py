"""Fresh databases on the machine's PostgreSQL (TEST_POSTGRES_DSN), made and dropped by
the tests that need one. Where no server answers, the test is skipped with the reason,
except under CI=true, where that fails it (see `tests.support.service_missing`)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import make_engine
from infra import postgres
from tests.support import service_missing

ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def create_databases(*names: str) -> None:
    try:
        await postgres.ensure_databases(ADMIN_DSN, *names)
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", f"{ADMIN_DSN}: {exc}; set TEST_POSTGRES_DSN to use another")


async def drop_databases(*names: str) -> None:
    await postgres.drop_databases(ADMIN_DSN, *names)


def database_url(name: str) -> str:
    """The SQLAlchemy URL of one of the databases made here."""
    return postgres.database_url(ADMIN_DSN, name)


async def end_connections(name: str) -> int:
    """End every connection to database `name` as a server restart would; how many."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        ended: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    return ended


@contextlib.asynccontextmanager
async def fresh_database(prefix: str) -> AsyncIterator[str]:
    """The name of a database of its own, made now and dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await create_databases(name)
    try:
        yield name
    finally:
        await drop_databases(name)


@contextlib.asynccontextmanager
async def fresh_engine(prefix: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """(name, engine) of a database of its own, made now and dropped after."""
    async with fresh_database(prefix) as name:
        engine = make_engine(database_url(name))
        try:
            yield name, engine
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def fresh_url(backend: str, directory: Path, prefix: str) -> AsyncIterator[str]:
    """The URL of a fresh database on `backend`: "sqlite", a file in `directory`;
    "postgresql", a database made now and dropped after."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory}/{prefix}.db"
        return
    async with fresh_database(prefix) as name:
        yield database_url(name)
