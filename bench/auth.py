"""Auth on one core: refreshes per second (goal 500, shown beside the same process's
/healthz so that a busy machine is seen as such), logins against raw argon2id on the
same core (the floor: a login cannot be cheaper than its hash), passkey sign-ins beside
those password logins, and the most sign-ups a second it takes (for the latency figure,
which runs at half of it).

A passkey sign-in is two requests (options, then the signed answer) and the answer must
be signed by the passkey's key, which wrk cannot do: its load is a Python client on the
load core, with the software authenticator of the tests (tests/passkey_device.py). The
figure notes how busy auth's core was, so a client too slow to fill it would show. It runs
last, after the memory "after load" is read: auth imports the passkey checker at the first
passkey request, and what that adds is read on its own ("after passkeys too")."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
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
    cpu_seconds,
    errors_note,
    median,
    middle,
    start_pinned,
    wrk,
)
from common.db import make_engine, make_sessionmaker
from common.memory import resident_mb
from infra.processes import ROOT, ServiceProcess
from tests.passkey_device import Device

PASSWORD = "benchmark passphrase"
USERS = 48
PASSKEY_CLIENTS = 8  # accounts signing in with a passkey at once, one after another each


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


async def passkeys_added(url: str, emails: list[str]) -> list[Device]:
    """A passkey for each of the accounts, made by a device of its own."""
    devices = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for email in emails:
            login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            login.raise_for_status()
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            asked = await http.post(
                "/v1/auth/passkeys/options", json={"password": PASSWORD}, headers=bearer
            )
            asked.raise_for_status()
            device = Device()
            body = {"credential": device.create(asked.json()["publicKey"])}
            added = await http.post("/v1/auth/passkeys", json=body, headers=bearer)
            added.raise_for_status()
            devices.append(device)
    return devices


@dataclass
class SignIns:
    rate: float  # passkey sign-ins a second, both requests each
    busy: float  # the share of the time auth's process spent on its core
    failed: int


async def passkey_sign_ins(url: str, devices: list[Device], seconds: float, pid: int) -> SignIns:
    done = failed = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one_after_another(device: Device, until: float) -> None:
            nonlocal done, failed
            while time.monotonic() < until:
                asked = await http.post("/v1/auth/login/passkey/options")
                if asked.status_code != 200:
                    failed += 1
                    continue
                answer = {"credential": device.get(asked.json()["publicKey"])}
                signed_in = await http.post("/v1/auth/login/passkey", json=answer)
                if signed_in.status_code == 200:
                    done += 1
                else:
                    failed += 1

        cpu, start = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(one_after_another(d, start + seconds) for d in devices))
        took = time.monotonic() - start
        busy = (cpu_seconds(pid) - cpu) / took
    return SignIns(done / took, busy, failed)


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
        pid = auth.process.pid
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
        memory["auth after load"] = resident_mb(pid)
        # Passkeys last: auth imports their checker at the first passkey request, and the
        # figures above are of a process that has served none.
        devices = asyncio.run(passkeys_added(auth.url, emails[:PASSKEY_CLIENTS]))
        passkeys: list[SignIns] = []

        def passkey() -> float:
            passkeys.append(asyncio.run(passkey_sign_ins(auth.url, devices, seconds, pid)))
            return passkeys[-1].rate

        with_passkeys = alternate(rounds, {"login": lambda: login().rate, "passkey": passkey})
        memory["auth after passkeys too"] = resident_mb(pid)
        time.sleep(IDLE_TRIM_SECONDS + 1)  # argon2's buffers go back once idle
        memory["auth idle again"] = resident_mb(auth.process.pid)
    finally:
        auth.stop()
    refresh_rate = median([load.rate for load in refreshes])
    raw, login_rate = median(logins["raw"]), median(logins["login"])
    passkey_rate = median(with_passkeys["passkey"])
    busy = median([p.busy for p in passkeys])
    failed = sum(p.failed for p in passkeys)
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
            name="auth passkey sign-in (options + answer)",
            goal="(report)",
            measured=passkey_rate,
            unit="sign-ins/s",
            met=True,
            floor=median(with_passkeys["login"]),
            floor_label="password logins, alternating, for context",
            rounds=with_passkeys["passkey"],
            note=f"auth's core {busy:.0%} busy (a Python client signs the answers)"
            + (f"; {failed} refused" if failed else ""),
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
