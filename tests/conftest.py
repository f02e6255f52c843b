from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_service.config import AuthSettings
from auth_service.keys import generate_missing
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from tests.support import (
    TEST_ISSUER,
    TEST_OAUTH_CLIENTS,
    Minter,
    RecordingHandler,
    ServiceProcess,
    start_smtp,
)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker: the one in KAFKA_BOOTSTRAP_SERVERS, or an embedded Tansu."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    log = (tmp_path_factory.mktemp("broker") / "tansu.log").open("wb")
    with EmbeddedBroker(log=log) as broker:
        yield broker.bootstrap_servers
    log.close()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    generate_missing(auth_settings_for(path))
    return path


def auth_settings_for(key_dir: Path, **overrides: Any) -> AuthSettings:
    """Auth settings whose key material all lives in `key_dir`."""
    paths: dict[str, Any] = {
        "private_key_path": key_dir / "private.pem",
        "public_key_path": key_dir / "public.pem",
        "code_secret_path": key_dir / "code_secret",
        "retired_code_secrets_path": key_dir / "retired_code_secrets",
    }
    return AuthSettings(**{**paths, **overrides})


# The longest modules first, so that the two xdist workers (`--dist loadfile
# --no-loadscope-reorder`, see infra/test.sh) finish together rather than one waiting on
# the other's last long module. Everything else keeps its order.
SLOW_FIRST = (
    "tests/topology/",
    "tests/integration/test_mail_faults.py",
    "tests/integration/test_schema_fuzz.py",
    "tests/integration/test_broker_restarts.py",
    "tests/integration/test_outbox.py",
    "tests/integration/test_postgres.py",
    "tests/web/test_journey.py",
    "tests/web/test_accessibility.py",
    "tests/integration/test_infra.py",
    "tests/integration/test_workers.py",
)


def _slowness(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, p in enumerate(SLOW_FIRST) if path.startswith(p)), len(SLOW_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_slowness)  # stable: within a module, and among the rest, order stays


@dataclass
class Stack:
    auth: ServiceProcess
    films: ServiceProcess
    mailer: ServiceProcess
    smtp: RecordingHandler
    kafka_bootstrap: str
    key_dir: Path
    work: Path
    # Kept for the web front end (tests/web), whose origin auth must accept passkeys from.
    web_port: int

    def http(self) -> httpx.Client:
        return httpx.Client(timeout=30)

    def spawn(self, module: str, name: str, **overrides: str) -> ServiceProcess:
        """Another process of a service, on its own port and database unless told
        otherwise; the caller stops it."""
        base = {
            "auth_service": self.auth,
            "films_service": self.films,
            "mailer_service": self.mailer,
        }
        env = dict(base[module].env)
        prefix = module.split("_")[0].upper()
        env.pop(f"{prefix}_PORT", None)
        env[f"{prefix}_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.work}/{name}.db"
        if module == "films_service":
            # A films of its own database reads user events in a group of its own.
            env["FILMS_GROUP_ID"] = f"{env['FILMS_GROUP_ID']}-{name}"
        env.update(overrides)
        port = overrides.get(f"{prefix}_PORT")
        return ServiceProcess(
            module, f"{prefix}_PORT", env, self.work, name, port=int(port) if port else None
        ).start()

    def own_keys(self, directory: Path) -> dict[str, str]:
        """Environment for an auth with a key pair of its own (generated here)."""
        settings = auth_settings_for(directory, retired_keys_dir=directory / "retired")
        generate_missing(settings)
        return {
            "AUTH_PRIVATE_KEY_PATH": str(settings.private_key_path),
            "AUTH_PUBLIC_KEY_PATH": str(settings.public_key_path),
            "AUTH_CODE_SECRET_PATH": str(settings.code_secret_path),
            "AUTH_RETIRED_CODE_SECRETS_PATH": str(settings.retired_code_secrets_path),
            "AUTH_RETIRED_KEYS_DIR": str(settings.retired_keys_dir),
        }


# Short enough to test in seconds; the default (60 s) is the same code path.
TEST_RESEND_COOLDOWN = 2
TEST_CODE_BUDGET = 8  # wrong codes per address across all its codes (default 20)


@pytest.fixture(scope="session")
def stack(
    kafka_bootstrap: str, key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Broker, a real SMTP server and the three services as separate processes."""
    work = tmp_path_factory.mktemp("stack")
    smtp = RecordingHandler()
    controller = start_smtp(smtp)
    web_port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{work}/auth.db",
        "FILMS_DATABASE_URL": f"sqlite+aiosqlite:///{work}/films.db",
        "MAILER_DATABASE_URL": f"sqlite+aiosqlite:///{work}/mailer.db",
        "AUTH_PRIVATE_KEY_PATH": str(key_dir / "private.pem"),
        "AUTH_PUBLIC_KEY_PATH": str(key_dir / "public.pem"),
        "AUTH_CODE_SECRET_PATH": str(key_dir / "code_secret"),
        "AUTH_RETIRED_CODE_SECRETS_PATH": str(key_dir / "retired_code_secrets"),
        "AUTH_RESEND_COOLDOWN_SECONDS": str(TEST_RESEND_COOLDOWN),
        # One slow answer on a busy machine must not hold the floor up for the whole run:
        # the cooldown tests ask twice within TEST_RESEND_COOLDOWN.
        "AUTH_ENUMERATION_FLOOR_MEMORY_SECONDS": "60",
        # A sign-up left by its request is resumed this long after (test_auth_api.py
        # leaves one), and no sooner: a busy machine's own finish has that long to claim it.
        "AUTH_SIGNUP_RESUME_AFTER_SECONDS": "20",
        # Every test comes from 127.0.0.1; test_rate_limits.py runs its own auth with them on.
        "AUTH_RATE_LIMIT_ENABLED": "false",
        # RFC 9068's type, so every verifier here meets it (the default, JWT: test_jwt.py).
        "AUTH_ACCESS_TOKEN_TYPE": "at+jwt",
        "AUTH_CODE_MAX_FAILURES_PER_ADDRESS": str(TEST_CODE_BUDGET),
        # Passkeys from the issuer's origin (the API tests' software authenticator) and
        # from the web front end's, as Chromium names it: an IP address cannot be a
        # relying party's id, so the browser tests open it as localhost.
        "AUTH_PASSKEY_ORIGINS": f"{TEST_ISSUER},http://localhost:{web_port}",
        # Applications that sign people in at the web front end (test_oauth*.py).
        "AUTH_OAUTH_CLIENTS": json.dumps(TEST_OAUTH_CLIENTS),
        "AUTH_AUTHORIZATION_ENDPOINT": f"http://localhost:{web_port}/oauth/authorize",
        "AUTH_END_SESSION_ENDPOINT": f"http://localhost:{web_port}/oauth/logout",
        "FILMS_PUBLIC_KEY_PATH": str(key_dir / "public.pem"),
        "MAILER_PUBLIC_KEY_PATH": str(key_dir / "public.pem"),
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(controller.port),
        # The default 25 ms keeps an idle mailer polling 40 times a second, a tenth of a
        # core each; the suite runs many mailers on two cores and wants the CPU back.
        "MAILER_FETCH_MAX_WAIT_MS": "200",
        # Unique per run, so a shared real Kafka does not hand us an older run's offsets.
        "MAILER_GROUP_ID": f"mailer-test-{uuid.uuid4().hex[:8]}",
        "FILMS_GROUP_ID": f"films-test-{uuid.uuid4().hex[:8]}",
    }
    services = [
        ServiceProcess("auth_service", "AUTH_PORT", env, work),
        ServiceProcess("films_service", "FILMS_PORT", env, work),
        ServiceProcess("mailer_service", "MAILER_PORT", env, work),
    ]
    try:
        for service in services:
            service.start()
        auth, films, mailer = services
        yield Stack(auth, films, mailer, smtp, kafka_bootstrap, key_dir, work, web_port)
    finally:
        for service in services:
            service.stop()
        controller.stop()


@pytest.fixture(scope="session")
def films_token(key_dir: Path) -> str:
    """A correctly signed access token, as auth would issue it (films only checks signatures)."""
    return Minter(key_dir).token()
