"""Alembic migrations, driven from code. Each service keeps its own under
`<service>/migrations/` (env.py + versions/) and its own version table, so services can
share a database server, or even one database, without stepping on each other.

Services upgrade their database to head at start-up; `python -m infra.migrate` does the
same for every service from the command line (for deployments that migrate as a step).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

SERVICES = ("auth_service", "films_service", "mailer_service", "web_service")


class NotMigrated(RuntimeError):
    """The database has our tables but no version table: made before migrations existed."""


def version_table(service: str) -> str:
    return f"alembic_version_{service.removesuffix('_service')}"


def config(service: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"{service}:migrations")
    cfg.attributes["service"] = service
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, service: str, metadata: MetaData) -> None:
    tables = set(inspect(connection).get_table_names())
    if version_table(service) not in tables and tables & set(metadata.tables):
        raise NotMigrated(
            f"the {service} database has tables but no {version_table(service)}: it predates "
            "migrations. In development delete it (var/*.db); elsewhere stamp it with "
            "`python -m infra.migrate --stamp` once its schema matches."
        )
    command.upgrade(config(service, connection), "head")


async def upgrade(engine: AsyncEngine, service: str, metadata: MetaData) -> None:
    """Bring the database to the newest revision (a no-op when it is there already)."""
    async with _sqlite_file_lock(engine), engine.begin() as conn:
        await conn.run_sync(_upgrade, service, metadata)


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Workers starting together on one SQLite file (AUTH_WORKERS=2): one migrates, the
    others wait for it and then find nothing to do. (PostgreSQL: an advisory lock, in
    run_env.) Without it the second worker's CREATE TABLE failed and uvicorn stopped."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _stamp(connection: Connection, service: str) -> None:
    command.stamp(config(service, connection), "head")


async def stamp(engine: AsyncEngine, service: str) -> None:
    """Mark the database as at the newest revision without changing it."""
    async with engine.begin() as conn:
        await conn.run_sync(_stamp, service)


def run_env(metadata: MetaData) -> None:
    """The body of every service's migrations/env.py."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through common.migrations or python -m infra.migrate")
    service: str = context.config.attributes["service"]
    options: dict[str, Any] = {
        "connection": connection,
        "target_metadata": metadata,
        "version_table": version_table(service),
        "render_as_batch": True,  # SQLite cannot ALTER most things; batch mode copies tables
        "compare_type": True,
        # Autogenerate looks only at this service's tables, even in a shared database.
        "include_name": lambda name, kind, _: kind != "table" or name in metadata.tables,
    }
    context.configure(**options)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two replicas starting together: one migrates, the other waits, then finds
            # nothing to do.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock(hashtext('{service}'))")
        context.run_migrations()


def main() -> None:
    """`python -m common.migrations`: what `common.db.migrate_apart` runs in its child,
    told the database and the declarative base by MIGRATE_DATABASE_URL and MIGRATE_BASE."""
    import importlib

    from common.db import make_engine, migrate

    module, _, name = os.environ["MIGRATE_BASE"].partition(":")
    base = getattr(importlib.import_module(module), name)
    engine = make_engine(os.environ["MIGRATE_DATABASE_URL"])

    async def run() -> None:
        try:
            await migrate(engine, base)
        finally:
            await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()
