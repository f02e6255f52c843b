"""`python -m bench`: every benchmark, one table.

    .venv/bin/python -m bench                      # SQLite, ~10 minutes
    .venv/bin/python -m bench --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench --quick --only films # a smoke run of one area

Prints the table, writes it to bench/results.md and into the README's performance
section, and draws bench/results.png. The method is in bench/harness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import uuid

from bench import auth, enumeration, films, mail, scaling
from bench.harness import LOAD_CORE, Figure, key_env, key_material, pin, pin_self, workdir
from bench.mail import Sink
from bench.report import write
from infra import postgres
from infra.broker import EmbeddedBroker

AREAS = ("films", "auth", "enumeration", "mail", "latency", "scaling")
# One database per service and run; the latency run's auth and mailer, and the
# enumeration run's auth, get their own.
DATABASES = ("auth", "films", "mailer", "lauth", "lmailer", "kinds")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s: a smoke run")
    parser.add_argument(
        "--database-url", help="a PostgreSQL server (its admin DSN): fresh databases per run"
    )
    parser.add_argument("--only", default=",".join(AREAS), help=",".join(AREAS))
    args = parser.parse_args()
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    only = set(args.only.split(","))

    pin_self()
    work = workdir()
    keys = key_material(work / "keys")
    run = uuid.uuid4().hex[:6]
    log = (work / "broker.log").open("ab")
    broker = EmbeddedBroker(log=log).start()
    assert broker.process is not None
    pin(broker.process.pid, LOAD_CORE)
    env = {**os.environ, **key_env(keys), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    sink = Sink(work)
    if args.database_url:
        dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
        names = {area: f"bench_{run}_{area}" for area in DATABASES}
        asyncio.run(postgres.ensure_databases(dsn, *names.values()))
        url = {area: postgres.database_url(dsn, name) for area, name in names.items()}
        database = "PostgreSQL"
    else:
        url = {area: f"sqlite+aiosqlite:///{work}/{area}.db" for area in DATABASES}
        database = "SQLite"
    figures: list[Figure] = []
    memory: dict[str, float] = {}
    try:
        if "films" in only:
            found, used = films.figures(work, env, url["films"], rounds, seconds)
            figures += found
            memory.update(used)
        signup_rate = 20.0
        if "auth" in only:
            found, used = auth.figures(work, env, url["auth"], rounds, seconds)
            figures += found
            memory.update(used)
            signup_rate = found[-1].measured
        if "enumeration" in only:
            figures.append(enumeration.figure(work, env, url["kinds"], rounds))
        if "mail" in only:
            figure, used = mail.throughput(work, env, url["mailer"], sink, rounds)
            figures.append(figure)
            memory.update(used)
        if "latency" in only:
            databases = {"auth": url["lauth"], "mailer": url["lmailer"]}
            rate = max(1.0, signup_rate / 2)
            figures.append(mail.latency(work, env, databases, sink, rate, rounds, seconds * 2))
        if "scaling" in only:
            figures += scaling.figures(work, env, rounds, seconds)
    finally:
        sink.stop()
        broker.stop()
        log.close()
        if args.database_url:
            asyncio.run(postgres.drop_databases(dsn, *names.values()))
    command = shlex.join(["python", "-m", "bench", *sys.argv[1:]])
    print(write(figures, memory, command, database))


if __name__ == "__main__":
    main()
