"""Databases on the machine's PostgreSQL server, made on demand for the topology runner
(and dropped again by the tests that made them)."""

from __future__ import annotations

import asyncpg

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def ensure_databases(dsn: str, *names: str) -> list[str]:
    """Create those of `names` that do not exist; returns the ones created."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        created = [name for name in names if name not in existing]
        for name in created:
            await conn.execute(f'CREATE DATABASE "{name}"')
        return created
    finally:
        await conn.close()


async def drop_databases(dsn: str, *names: str) -> None:
    await _admin(dsn, *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names))


def database_url(dsn: str, name: str) -> str:
    """The SQLAlchemy URL of database `name` on the server `dsn` points at."""
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"
