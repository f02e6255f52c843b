"""The production topology, as `python -m infra.stack --prod` runs it: an nginx gateway,
two instances each of auth, films and the mailer, PostgreSQL, Redis, the embedded broker,
and a real SMTP server the tests read. Built once for the module's tests; each test
leaves it whole (an instance it kills, it starts again)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from limits.aio.storage import RedisStorage

from auth_service.ratelimit import disconnect
from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.topology import Topology
from tests.postgres import ADMIN_DSN
from tests.support import RecordingHandler, service_missing, start_smtp

REDIS_URL = "redis://127.0.0.1:6379/0"
# Tight where a test counts; open where tests send many (sign-ups all come from one place).
LIMITS = {"ip:signup": [100_000, 60], "ip:forgot": [4, 60], "account:forgot": [100_000, 3600]}


class Deployed:
    def __init__(self, topology: Topology, smtp: RecordingHandler) -> None:
        self.topology = topology
        self.smtp = smtp
        self.url = topology.gateway_url

    def instances(self, service: str) -> list[ServiceProcess]:
        return self.topology.services[service]

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """A client whose requests leave from `source` (any 127.x address works)."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=30)

    def leader(self) -> ServiceProcess:
        """The auth instance whose relay holds the outbox lock."""
        for instance in self.instances("auth"):
            metrics = httpx.get(f"{instance.url}/metrics").text
            if "auth_outbox_relay_leader 1.0" in metrics:
                return instance
        raise AssertionError("no auth instance relays the outbox")

    def delivered(self, emails: list[str]) -> dict[str, int]:
        wanted = set(emails)
        counts: dict[str, int] = {}
        with self.smtp.lock:
            for message in self.smtp.messages:
                if message.rcpt in wanted:
                    counts[message.rcpt] = counts.get(message.rcpt, 0) + 1
        return counts


def _postgres_or_missing() -> None:
    async def check() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(check())
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", f"{ADMIN_DSN}: {exc}")


async def _redis(prefix: str, *, reset: bool = False) -> bool:
    """Does Redis answer? With `reset`, remove the keys under `prefix` too."""
    storage = RedisStorage(f"async+{REDIS_URL}", key_prefix=prefix, wrap_exceptions=True)
    try:
        if reset:
            await storage.reset()
        return bool(await storage.check())
    finally:
        disconnect(storage)


@pytest.fixture(scope="module")
def deployed(key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    _postgres_or_missing()
    if not asyncio.run(_redis("check")):
        service_missing("Redis", f"{REDIS_URL} does not answer")
    run = uuid.uuid4().hex[:8]
    smtp = RecordingHandler()
    controller = start_smtp(smtp)
    env = {
        "AUTH_PRIVATE_KEY_PATH": str(key_dir / "private.pem"),
        "AUTH_PUBLIC_KEY_PATH": str(key_dir / "public.pem"),
        "AUTH_CODE_SECRET_PATH": str(key_dir / "code_secret"),
        "AUTH_RETIRED_KEYS_DIR": str(key_dir / "retired"),
        "AUTH_REDIS_URL": REDIS_URL,
        "AUTH_REDIS_KEY_PREFIX": f"topology-{run}",
        "AUTH_RATE_LIMITS": json.dumps(LIMITS),
        "AUTH_RESEND_COOLDOWN_SECONDS": "1",
        "MAILER_FETCH_MAX_WAIT_MS": "200",  # as in tests/conftest.py: idle CPU back
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(controller.port),
        "MAILER_GROUP_ID": f"mailer-{run}",
        # A crash can repeat at most one email per connection: with one, the bound is one.
        "MAILER_SMTP_CONNECTIONS": "1",
    }
    topology = Topology(
        workdir=tmp_path_factory.mktemp("topology"),
        env={**os.environ, **env},
        production=True,
        instances=2,
        gateway_port=free_port(),
        database_prefix=f"topology_{run}",
        admin_dsn=ADMIN_DSN.rsplit("/", 1)[0] + "/postgres",
    )
    try:
        topology.start()
        yield Deployed(topology, smtp)
    finally:
        topology.stop()
        topology.drop_databases()
        controller.stop()
        asyncio.run(_redis(f"topology-{run}", reset=True))
