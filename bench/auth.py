"""Auth on one core: refreshes per second (goal 500, shown beside the same process's
/healthz so that a busy machine is seen as such), logins against raw argon2id on the
same core (the floor: a login cannot be cheaper than its hash), and the most sign-ups a
second it takes (for the latency figure, which runs at half of it)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from auth_service.config import AuthSettings
from auth_service.models import User
from auth_service.passwords import IDLE_TRIM_SECONDS, PasswordHasher
from bench.harness import (
    SERVICE_CORE,
    Figure,
    Load,
    alternate,
    errors_note,
    median,
    middle,
    start_pinned,
    wrk,
)
from common.db import make_engine, make_sessionmaker
from common.memory import resident_mb
from infra.processes import ROOT, ServiceProcess

PASSWORD = "benchmark passphrase"
USERS = 48


async def seed_users(database_url: str) -> list[str]:
    """Verified accounts, written straight to the database the service migrated."""
    hasher = PasswordHasher(AuthSettings())
    password_hash = await hasher.hash(PASSWORD)
    hasher.close()
    emails = [f"bench-{secrets.token_hex(4)}-{i}@example.com" for i in range(USERS)]
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            session.add_all(
                User(email=e, password_hash=password_hash, email_verified=True, roles=[])
                for e in emails
            )
    finally:
        await engine.dispose()
    return emails


async def refresh_tokens(url: str, emails: list[str]) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        answers = await asyncio.gather(
            *(http.post("/v1/auth/login", json={"email": e, "password": PASSWORD}) for e in emails)
        )
    return [a.json()["refresh_token"] for a in answers]


def raw_argon2_rate(seconds: float) -> float:
    command = ["taskset", "-c", str(SERVICE_CORE), sys.executable, "-m", "bench.argon2_rate"]
    done = subprocess.run([*command, str(seconds)], cwd=ROOT, capture_output=True, text=True)
    return float(done.stdout)


def figures(
    work: Path, env: dict[str, str], database_url: str, rounds: int, seconds: float
) -> tuple[list[Figure], dict[str, float]]:
    auth_env = {**env, "AUTH_DATABASE_URL": database_url, "AUTH_RATE_LIMIT_ENABLED": "false"}
    auth = start_pinned(ServiceProcess("auth_service", "AUTH_PORT", auth_env, work, "auth"))
    assert auth.process is not None
    memory = {"auth idle": resident_mb(auth.process.pid)}
    try:
        emails = asyncio.run(seed_users(database_url))
        users = work / "users.txt"
        users.write_text("\n".join(emails) + "\n")
        tokens = work / "tokens.txt"

        def refresh() -> Load:
            # Fresh families every round: a refresh token is single use.
            tokens.write_text("\n".join(asyncio.run(refresh_tokens(auth.url, emails))) + "\n")
            return wrk(auth.url, seconds=seconds, script="refresh.lua", script_args=(str(tokens),))

        def login() -> Load:
            return wrk(
                auth.url,
                seconds=seconds,
                connections=8,
                script="login.lua",
                script_args=(str(users),),
            )

        def healthz() -> Load:
            return wrk(f"{auth.url}/healthz", seconds=seconds)

        # The refresh goal is absolute; the same process's /healthz beside it shows what
        # the machine allowed in this run (a busy host lowers both).
        refreshes_and_floor = alternate(rounds, {"healthz": healthz, "refresh": refresh})
        refreshes = refreshes_and_floor["refresh"]
        logins = alternate(
            rounds,
            {"raw": lambda: raw_argon2_rate(seconds), "login": lambda: login().rate},
        )
        signup = wrk(
            auth.url,
            seconds=seconds,
            connections=8,
            script="signup.lua",
            script_args=(uuid.uuid4().hex[:8],),
        )
        memory["auth after load"] = resident_mb(auth.process.pid)
        time.sleep(IDLE_TRIM_SECONDS + 1)  # argon2's buffers go back once idle
        memory["auth idle again"] = resident_mb(auth.process.pid)
    finally:
        auth.stop()
    refresh_rate = median([load.rate for load in refreshes])
    raw, login_rate = median(logins["raw"]), median(logins["login"])
    return [
        Figure(
            name="auth POST /v1/auth/token/refresh",
            goal=">= 500/s on one core",
            measured=refresh_rate,
            unit="req/s",
            met=refresh_rate >= 500,
            floor=median([load.rate for load in refreshes_and_floor["healthz"]]),
            floor_label="the same process's /healthz, for context",
            rounds=[load.rate for load in refreshes],
            latency=middle(refreshes),
            note=errors_note(refreshes),
        ),
        Figure(
            name="auth POST /v1/auth/login",
            goal=">= 0.9x raw argon2id",
            measured=login_rate,
            unit="req/s",
            met=login_rate >= 0.9 * raw,
            floor=raw,
            floor_label="raw argon2id verify, same core",
            rounds=logins["login"],
        ),
        Figure(
            name="auth POST /v1/auth/signup, most a second",
            goal="(sets the latency run's rate)",
            measured=signup.rate,
            unit="req/s",
            met=True,
            latency=signup,
        ),
    ], memory
