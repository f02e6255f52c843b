"""`python -m infra.migrate [--stamp] [SERVICE ...]`: upgrade each service's database
(default: all three, each at its `*_DATABASE_URL`) to the newest Alembic revision.

Services also do this at start-up, so the local stack needs no step; a deployment that
migrates before rolling out runs this once. `--stamp` marks a database created before
migrations existed as being at the newest revision, without changing it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib

from alembic import command
from sqlalchemy import Connection

from common.db import make_engine
from common.migrations import SERVICES, config, upgrade

SETTINGS = {
    "auth_service": ("auth_service.config", "AuthSettings"),
    "films_service": ("films_service.config", "FilmsSettings"),
    "mailer_service": ("mailer_service.config", "MailerSettings"),
}


def _stamp(connection: Connection, service: str) -> None:
    command.stamp(config(service, connection), "head")


async def run(service: str, stamp: bool) -> None:
    module, name = SETTINGS[service]
    url = getattr(importlib.import_module(module), name)().database_url
    metadata = importlib.import_module(f"{service}.models").Base.metadata
    engine = make_engine(url)
    try:
        if stamp:
            async with engine.begin() as conn:
                await conn.run_sync(_stamp, service)
        else:
            await upgrade(engine, service, metadata)
    finally:
        await engine.dispose()
    print(f"{service}: {'stamped' if stamp else 'at the newest revision'} ({url.split('://')[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.migrate")
    parser.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(SERVICES))
    parser.add_argument("--stamp", action="store_true")
    args = parser.parse_args()
    if unknown := set(args.services) - set(SERVICES):
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    for service in args.services or SERVICES:
        asyncio.run(run(service, args.stamp))


if __name__ == "__main__":
    main()
