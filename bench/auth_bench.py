"""Auth benchmark: login and refresh throughput, /healthz latency under a login storm.

    .venv/bin/python -m bench.auth_bench [--seconds 8]

Every figure is printed beside a baseline measured in the same run, on the same machine:
  * login/s as a ratio to the raw argon2id verify rate at the service's parameters
    (one thread per core, no HTTP, no database): the goal is >= 0.85;
  * refresh/s per core (Keycloak's sizing guide: 120/s per vCPU; our goal >= 500/s);
  * /healthz p99 during the login storm, beside /healthz p99 idle (goal < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from auth_service.config import AuthSettings
from auth_service.models import Base, User
from auth_service.passwords import PasswordHasher
from bench.common import (
    LightClient,
    cpu_seconds,
    key_material,
    machine,
    run_for,
    summary,
    workdir,
)
from common.db import make_engine, make_sessionmaker, migrate
from infra.broker import EmbeddedBroker
from tests.support import ServiceProcess

PASSWORD = "benchmark passphrase"
USERS = 64


def raw_argon2_rate(seconds: float) -> float:
    """Verifies per second with one thread per core: what the CPU can do, nothing else."""
    settings = AuthSettings()
    hasher = PasswordHasher(settings)
    stored = hasher._context.hash(PASSWORD.encode())
    hasher.close()
    workers = os.cpu_count() or 1
    deadline = time.perf_counter() + seconds

    def loop() -> int:
        n = 0
        while time.perf_counter() < deadline:
            hasher._context.verify(PASSWORD.encode(), stored)
            n += 1
        return n

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(lambda _: loop(), range(workers)))
    return total / (time.perf_counter() - started)


async def seed_users(database_url: str) -> list[str]:
    engine = make_engine(database_url)
    await migrate(engine, Base)
    hasher = PasswordHasher(AuthSettings())
    password_hash = await hasher.hash(PASSWORD)
    hasher.close()
    emails = [f"bench-{i}-{secrets.token_hex(3)}@example.com" for i in range(USERS)]
    async with make_sessionmaker(engine).begin() as session:
        session.add_all(
            User(email=e, password_hash=password_hash, email_verified=True, roles=[])
            for e in emails
        )
    await engine.dispose()
    return emails


async def healthz_sampler(url: str, stop: asyncio.Event, out: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            started = time.perf_counter()
            r = await http.get("/healthz")
            assert r.status_code == 200
            out.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)


async def bench(seconds: float, database_url: str | None) -> None:
    work = workdir()
    settings = key_material(work / "keys")
    database_url = database_url or f"sqlite+aiosqlite:///{work}/auth.db"
    emails = await seed_users(database_url)

    print(f"machine: {machine()}; argon2id m=19 MiB t=2 p=1; {seconds:.0f} s per phase")
    print(f"database: {database_url.split('://')[0]}")
    raw = raw_argon2_rate(seconds)
    print(f"baseline  raw argon2id verify: {raw:8.1f} /s (one thread per core)")

    with EmbeddedBroker() as broker:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "AUTH_DATABASE_URL": database_url,
            "AUTH_PRIVATE_KEY_PATH": str(settings.private_key_path),
            "AUTH_PUBLIC_KEY_PATH": str(settings.public_key_path),
            "AUTH_CODE_SECRET_PATH": str(settings.code_secret_path),
            "AUTH_RATE_LIMIT_ENABLED": "false",
        }
        auth = ServiceProcess("auth_service", "AUTH_PORT", env, Path(work)).start()
        try:
            assert auth.process is not None
            await measure(auth.url, auth.process.pid, emails, raw, seconds)
        finally:
            auth.stop()


async def measure(url: str, pid: int, emails: list[str], raw: float, seconds: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    workers = 4 * (os.cpu_count() or 1)
    clients = [LightClient(host, int(port)) for _ in range(max(workers, 16))]
    try:
        idle: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(healthz_sampler(url, stop, idle))
        await asyncio.sleep(min(seconds, 4))
        stop.set()
        await sampler

        async def login(worker: int) -> None:
            body = json.dumps({"email": emails[worker % len(emails)], "password": PASSWORD})
            status, payload = await clients[worker].request("POST", "/v1/auth/login", body.encode())
            assert status == 200, payload

        for worker in range(workers):  # open connections, warm caches
            await login(worker)
        during: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(healthz_sampler(url, stop, during))
        server_cpu, own_cpu = cpu_seconds(pid), cpu_seconds()
        logins, elapsed = await run_for(seconds, workers, login)
        server_cpu, own_cpu = cpu_seconds(pid) - server_cpu, cpu_seconds() - own_cpu
        stop.set()
        await sampler
        login_rate = logins / elapsed
        print(
            f"login     via HTTP:            {login_rate:8.1f} /s  ratio to raw: "
            f"{login_rate / raw:.2f} (goal >= 0.85)"
        )
        print(
            f"          CPU per login: service {server_cpu / logins * 1000:.1f} ms "
            f"(argon2 alone: {2000 / raw:.1f} ms), load generator {own_cpu / logins * 1000:.1f} ms"
        )
        print(f"/healthz  idle:                {summary(idle)}")
        print(f"/healthz  during login storm:  {summary(during)} (goal p99 < 50 ms)")

        tokens = []
        for email in emails[:16]:
            body = json.dumps({"email": email, "password": PASSWORD}).encode()
            _, payload = await clients[0].request("POST", "/v1/auth/login", body)
            tokens.append(json.loads(payload)["refresh_token"])

        async def refresh(worker: int) -> None:
            body = json.dumps({"refresh_token": tokens[worker]}).encode()
            status, payload = await clients[worker].request("POST", "/v1/auth/token/refresh", body)
            assert status == 200, payload
            tokens[worker] = json.loads(payload)["refresh_token"]

        server_cpu = cpu_seconds(pid)
        refreshes, elapsed = await run_for(seconds, len(tokens), refresh)
        server_cpu = cpu_seconds(pid) - server_cpu
        rate = refreshes / elapsed
        # The service is one process on one event loop: it has one core for itself.
        print(
            f"refresh   via HTTP:            {rate:8.1f} /s on one service process "
            f"(goal >= 500/s per core; Keycloak's sizing guide: 120/s per vCPU)"
        )
        print(
            f"          service CPU per refresh {server_cpu / refreshes * 1000:.2f} ms "
            f"= {refreshes / server_cpu:.0f} refreshes per CPU-second"
        )
    finally:
        for client in clients:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--database-url",
        help="e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test (default: a fresh SQLite)",
    )
    args = parser.parse_args()
    asyncio.run(bench(args.seconds, args.database_url))


if __name__ == "__main__":
    main()
