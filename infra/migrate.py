"""`python -m infra.migrate [--stamp] [SERVICE ...]`: upgrade each service's database
(default: every one, each at its `*_DATABASE_URL`) to the newest Alembic revision.

Services also do this at start-up, so the local stack needs no step; a deployment that
migrates before rolling out runs this once. `--stamp` marks a database created before
migrations existed as being at the newest revision, without changing it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib

from common.db import make_engine, migrate
from common.migrations import SERVICES, stamp

SETTINGS = {
    "auth_service": ("auth_service.config", "AuthSettings"),
    "films_service": ("films_service.config", "FilmsSettings"),
    "mailer_service": ("mailer_service.config", "MailerSettings"),
    "web_service": ("web_service.config", "WebSettings"),
}


async def run(service: str, stamp_only: bool) -> None:
    module, name = SETTINGS[service]
    url = getattr(importlib.import_module(module), name)().database_url
    engine = make_engine(url)
    try:
        if stamp_only:
            await stamp(engine, service)
        else:
            await migrate(engine, importlib.import_module(f"{service}.models").Base)
    finally:
        await engine.dispose()
    print(
        f"{service}: {'stamped' if stamp_only else 'at the newest revision'} ({url.split('://')[0]})"
    )


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
