"""infra/postgres-init.sql, run with psql as the postgres image runs it, on the machine's
server: each service's role reaches its own database and no other's. The server is
shared, so this run's roles and databases carry a prefix of their own."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.postgres import ADMIN_DSN, create_databases
from tests.support import ROOT

SERVICES = ("auth", "films", "mailer", "web")
SCRIPT = (ROOT / "infra/postgres-init.sql").read_text()


def run_script(prefix: str, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = re.sub(rf"\b({'|'.join(SERVICES)})\b", rf"{prefix}\1", SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    env.update({f"POSTGRES_{name.upper()}_PASSWORD": value for name, value in passwords.items()})
    return subprocess.run(
        ["psql", "--no-psqlrc", "-q", ADMIN_DSN],
        input=script,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield prefix
    # One -c each: statements in one -c run as one transaction, where DROP DATABASE cannot.
    drops = [f"DROP DATABASE IF EXISTS {prefix}{name}" for name in SERVICES]
    drops += [f"DROP ROLE IF EXISTS {prefix}{name}" for name in SERVICES]
    commands = [arg for drop in drops for arg in ("-c", drop)]
    subprocess.run(["psql", "--no-psqlrc", "-q", ADMIN_DSN, *commands], check=True)


async def test_each_service_owns_its_database_and_reaches_no_other(prefix: str) -> None:
    await create_databases()  # skips (fails under CI=true) where no server answers
    done = run_script(prefix, {name: f"{name}-{uuid.uuid4().hex}" for name in SERVICES})
    assert done.returncode == 0, done.stderr
    for name in SERVICES:
        own = await asyncpg.connect(ADMIN_DSN, user=f"{prefix}{name}", database=f"{prefix}{name}")
        try:
            await own.execute("CREATE TABLE t (x int)")  # owner: migrations can run
            assert not await own.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
        finally:
            await own.close()
        other = f"{prefix}{'films' if name == 'auth' else 'auth'}"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(ADMIN_DSN, user=f"{prefix}{name}", database=other)


async def test_a_password_not_given_stops_the_script(prefix: str) -> None:
    """Not the previous role's password, nor an empty one: psql's \\getenv leaves a
    variable as it was when the environment lacks it."""
    await create_databases()
    done = run_script(prefix, {"auth": "a password"})
    assert done.returncode != 0
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        made = await admin.fetch(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix
        )
    finally:
        await admin.close()
    assert [row["rolname"] for row in made] == [f"{prefix}auth"]
