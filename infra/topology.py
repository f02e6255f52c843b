"""The whole system on one machine, in two shapes.

* local (`python -m infra.stack`): one instance of each service on its default port,
  SQLite, the embedded broker and the SMTP sink: the development stack, with the web
  front end on :8003 calling the other three directly.
* production (`python -m infra.stack --prod`): the topology users deploy, without
  Docker. An nginx gateway (infra/gateway.py) in front of two instances each of auth,
  films, the mailer and the web front end (served at `/`), on the machine's PostgreSQL (a
  database per service, made on demand) and Redis (shared rate-limit counters). Films and
  the mailer fetch auth's keys through the gateway (JWKS), so a key rotation reaches every
  instance; the web instances call the APIs through the gateway too, sharing one session
  key.

What the environment gives is used as it is: KAFKA_BOOTSTRAP_SERVERS,
MAILER_SMTP_HOST/MAILER_SMTP_PORT, *_DATABASE_URL, AUTH_REDIS_URL, the key paths. What it
does not give is started here: the embedded broker, the SMTP sink, development keys (and
a Redis server, if none answers on the default port). The gateway reaches the instances
from an address of its own, the one auth and the web trust with X-Forwarded-For; the web
calls from another address of its own, which auth trusts too, so auth counts and audits
the browser the web forwards, and no other local process can choose its address.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from aiosmtpd.controller import Controller

from auth_service.config import AuthSettings
from auth_service.keys import generate_missing
from infra import gateway, postgres
from infra.broker import EmbeddedBroker
from infra.ports import free_port, wait_for_port
from infra.processes import ROOT, ServiceProcess
from infra.smtp_sink import start_sink
from web_service import session_keys

# In start-up order: auth first (in production films and the mailer fetch its keys at
# start), the web front end last.
SERVICES = {
    "auth": "auth_service",
    "films": "films_service",
    "mailer": "mailer_service",
    "web": "web_service",
}
GATEWAY_SOURCE = "127.0.0.9"  # the gateway's address towards the instances (proxy_bind)
WEB_SOURCE = "127.0.0.10"  # the web instances' address towards the gateway
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_PORTS = {"auth": 8000, "films": 8001, "mailer": 8002, "web": 8003}

Echo = Callable[[str, str], None]  # (source, line)


def _redis_answers(url: str) -> bool:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except (OSError, ValueError):
        return False


def _trust(env: dict[str, str], variable: str, address: str) -> None:
    """Add `address` to the comma-separated list of trusted proxies in `variable`."""
    trusted = {p.strip() for p in env.get(variable, "").split(",") if p.strip()}
    env[variable] = ",".join(sorted(trusted | {address}))


@dataclass
class Topology:
    workdir: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    production: bool = False
    instances: int = 1
    gateway_port: int | None = None
    database_prefix: str = "stack"
    admin_dsn: str = postgres.ADMIN_DSN
    echo: Echo | None = None
    only: tuple[str, ...] = tuple(SERVICES)  # which services to run (benchmarks: some)

    broker: EmbeddedBroker | None = None
    sink: Controller | None = None
    redis: subprocess.Popen[bytes] | None = None
    nginx: subprocess.Popen[bytes] | None = None
    services: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)
    created_databases: list[str] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def web_url(self) -> str | None:
        """Where people open the web front end (the gateway, in production)."""
        if "web" not in self.services:
            return None
        return self.gateway_url if self.production else self.instance("web").url

    @property
    def web_named_url(self) -> str | None:
        """The same by name: where passkeys work (browsers refuse them on an IP address)."""
        url = self.web_url
        return url.replace("//127.0.0.1:", "//localhost:", 1) if url else None

    def say(self, text: str) -> None:
        if self.echo is not None:
            self.echo("stack", text)

    # -- what is given, and what is started ---------------------------------------------

    def start(self) -> Topology:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        try:
            self._broker(env)
            self._smtp(env)
            self._keys(env)
            self._web_session_key(env)
            if self.production:
                self._databases(env)
                self._redis(env)
                self._gateway_and_instances(env)
            else:
                self._instances(env, ports=True)
            self.base_env = env
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _broker(self, env: dict[str, str]) -> None:
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            self.say(f"Kafka: {env['KAFKA_BOOTSTRAP_SERVERS']} (given)")
            return
        port = int(env.get("STACK_BROKER_PORT") or (free_port() if self.production else 9092))
        log = (self.workdir / "broker.log").open("ab")
        self.logs.append(log)
        self.broker = EmbeddedBroker(port=port, log=log).start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.broker.bootstrap_servers
        self.say(f"embedded Kafka-protocol broker (Tansu) on {self.broker.bootstrap_servers}")

    def _smtp(self, env: dict[str, str]) -> None:
        if "MAILER_SMTP_HOST" in env:
            self.say(f"SMTP: {env['MAILER_SMTP_HOST']}:{env.get('MAILER_SMTP_PORT', 25)} (given)")
            return
        port = int(env.get("MAILER_SMTP_PORT") or (free_port() if self.production else 1025))
        maildir = self.workdir / "mail"
        announce = self._echo_for("smtp") or (lambda _: None)
        self.sink = start_sink("127.0.0.1", port, maildir, announce=announce)
        env["MAILER_SMTP_HOST"], env["MAILER_SMTP_PORT"] = "127.0.0.1", str(port)
        self.say(f"SMTP sink on 127.0.0.1:{port}: codes are printed here, emails kept in {maildir}")

    def _keys(self, env: dict[str, str]) -> None:
        if "AUTH_PRIVATE_KEY_PATH" in env:
            return
        settings = AuthSettings(
            private_key_path=ROOT / "keys/private.pem",
            public_key_path=ROOT / "keys/public.pem",
            code_secret_path=ROOT / "keys/code_secret",
            retired_keys_dir=ROOT / "keys/retired",
        )
        for made in generate_missing(settings):
            self.say(f"generated development key material {made}")
        env["AUTH_PRIVATE_KEY_PATH"] = str(settings.private_key_path)
        env["AUTH_PUBLIC_KEY_PATH"] = str(settings.public_key_path)
        env["AUTH_CODE_SECRET_PATH"] = str(settings.code_secret_path)
        env["AUTH_RETIRED_KEYS_DIR"] = str(settings.retired_keys_dir)
        env.setdefault("FILMS_PUBLIC_KEY_PATH", str(settings.public_key_path))
        env.setdefault("MAILER_PUBLIC_KEY_PATH", str(settings.public_key_path))

    def _web_session_key(self, env: dict[str, str]) -> None:
        """One key file for every web instance: a session sealed by one opens on the other."""
        if "web" not in self.only or "WEB_SESSION_KEY_PATH" in env:
            return
        path = self.workdir / "web_session_key"
        if session_keys.generate_missing(path):
            self.say(f"generated the web session key {path}")
        env["WEB_SESSION_KEY_PATH"] = str(path)

    def _passkey_origin(self, env: dict[str, str], port: str | int) -> None:
        """Auth takes passkeys from the web front end as browsers open it by name,
        http://localhost:<port>, unless told where they come from; and names its
        authorization and logout pages in the OpenID metadata."""
        if "web" in self.only and not {"AUTH_PASSKEY_ORIGINS", "AUTH_PUBLIC_URL"} & env.keys():
            env["AUTH_PASSKEY_ORIGINS"] = f"http://localhost:{port}"
        if "web" in self.only:  # and applications sign people in there (OAuth)
            env.setdefault(
                "AUTH_AUTHORIZATION_ENDPOINT", f"http://localhost:{port}/oauth/authorize"
            )
            env.setdefault("AUTH_END_SESSION_ENDPOINT", f"http://localhost:{port}/oauth/logout")

    def _databases(self, env: dict[str, str]) -> None:
        wanted = {
            f"{name.upper()}_DATABASE_URL": f"{self.database_prefix}_{name}"
            for name in SERVICES
            if name in self.only and f"{name.upper()}_DATABASE_URL" not in env
        }
        if not wanted:
            return
        self.created_databases = asyncio.run(
            postgres.ensure_databases(self.admin_dsn, *wanted.values())
        )
        for variable, database in wanted.items():
            env[variable] = postgres.database_url(self.admin_dsn, database)
        self.say(f"PostgreSQL databases {', '.join(wanted.values())} on {self.admin_dsn}")

    def _redis(self, env: dict[str, str]) -> None:
        if "AUTH_REDIS_URL" in env:
            self.say(f"Redis: {env['AUTH_REDIS_URL']} (given)")
            return
        if _redis_answers(DEFAULT_REDIS):
            env["AUTH_REDIS_URL"] = DEFAULT_REDIS
            self.say(f"Redis: {DEFAULT_REDIS} (the machine's)")
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no Redis answers on 127.0.0.1:6379 and redis-server is missing")
        port = free_port()
        log = (self.workdir / "redis.log").open("ab")
        self.logs.append(log)
        self.redis = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", port, 10)
        env["AUTH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        self.say(f"Redis started on 127.0.0.1:{port}")

    def _gateway_and_instances(self, env: dict[str, str]) -> None:
        port = self.gateway_port or int(env.get("GATEWAY_PORT", "8080"))
        self.gateway_port = port
        _trust(env, "AUTH_TRUSTED_PROXIES", GATEWAY_SOURCE)
        self._passkey_origin(env, port)
        jwks = f"{self.gateway_url}/.well-known/jwks.json"
        env.setdefault("FILMS_JWKS_URL", jwks)
        env.setdefault("MAILER_JWKS_URL", jwks)
        if "web" in self.only:
            for api in ("AUTH", "FILMS", "MAILER"):
                env.setdefault(f"WEB_{api}_URL", self.gateway_url)
            env.setdefault("WEB_ENV", "production")
            _trust(env, "WEB_TRUSTED_PROXIES", GATEWAY_SOURCE)
            # The web's calls reach auth through the gateway, the browser's address ahead
            # of the web's own in X-Forwarded-For: auth believes both hops.
            _trust(env, "AUTH_TRUSTED_PROXIES", env.setdefault("WEB_SOURCE_ADDRESS", WEB_SOURCE))
        self._instances(env, ports=False, launch=False)  # ports first, for the gateway
        self.nginx = gateway.start(
            gateway.Gateway(
                listen=f"127.0.0.1:{port}",
                upstreams={
                    name: [f"127.0.0.1:{s.port}" for s in instances]
                    for name, instances in self.services.items()
                },
                workdir=self.workdir / "gateway",
                source_address=GATEWAY_SOURCE,
            )
        )
        wait_for_port("127.0.0.1", port, 10)
        self.say(f"gateway (nginx) on {self.gateway_url}")
        self._launch()

    def _instances(self, env: dict[str, str], *, ports: bool, launch: bool = True) -> None:
        logs = self.workdir / "logs"
        if ports:  # the development stack: the web calls the instances on their ports
            for api in ("auth", "films", "mailer"):
                port = env.get(f"{api.upper()}_PORT", str(DEFAULT_PORTS[api]))
                env.setdefault(f"WEB_{api.upper()}_URL", f"http://127.0.0.1:{port}")
            env.setdefault("WEB_DATABASE_URL", f"sqlite+aiosqlite:///{self.workdir / 'web.db'}")
            self._passkey_origin(env, env.get("WEB_PORT", DEFAULT_PORTS["web"]))
        for name, module in SERVICES.items():
            if name not in self.only:
                continue
            prefix = name.upper()
            self.services[name] = [
                ServiceProcess(
                    module,
                    f"{prefix}_PORT",
                    env,
                    logs,
                    f"{name}-{i + 1}" if self.instances > 1 else name,
                    port=int(env.get(f"{prefix}_PORT", DEFAULT_PORTS[name])) if ports else None,
                    echo=self._echo_for(f"{name}-{i + 1}" if self.instances > 1 else name),
                )
                for i in range(self.instances)
            ]
        if launch:
            self._launch()

    def _launch(self) -> None:
        for name in SERVICES:  # one service at a time, in SERVICES' order
            for instance in self.services.get(name, []):
                instance.launch()
            for instance in self.services.get(name, []):
                instance.wait_healthy()
                self.say(f"{instance.name} is up on {instance.url}")

    def _echo_for(self, source: str) -> Callable[[str], None] | None:
        echo = self.echo
        if echo is None:
            return None
        return lambda line: echo(source, line)

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Every instance ready (its database, broker, keys, group joined), and, in
        production mode, every service answering through the gateway."""
        deadline = time.monotonic() + timeout
        for instance in self.all_instances():
            instance.wait_healthy(max(1.0, deadline - time.monotonic()), path="/readyz")
        if not self.production:
            return
        routes = {
            "/healthz": (200, "auth"),
            "/.well-known/jwks.json": (200, "auth"),
            "/v1/films": (401, "films"),
            "/v1/deliveries?email=a@example.com": (401, "mailer"),
            "/": (200, "web"),  # the home page (without the web, the gateway's JSON 404)
        }
        for path, (status, service) in routes.items():
            if service not in self.only:
                continue
            while True:
                try:
                    if httpx.get(f"{self.gateway_url}{path}", timeout=2).status_code == status:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gateway does not route {path}")
                time.sleep(0.2)

    # -- running ------------------------------------------------------------------------

    def all_instances(self) -> list[ServiceProcess]:
        return [instance for instances in self.services.values() for instance in instances]

    def instance(self, service: str, index: int = 0) -> ServiceProcess:
        return self.services[service][index]

    def kill_broker(self) -> None:
        """SIGKILL the embedded broker (everything it held is gone)."""
        assert self.broker is not None, "the broker was given, not started here"
        self.broker.kill()

    def start_broker(self) -> None:
        """The embedded broker again, on the same port, empty."""
        assert self.broker is not None, "the broker was given, not started here"
        self.broker.start()

    def drop_databases(self) -> None:
        """Drop the databases this topology created (for tests)."""
        if self.created_databases:
            asyncio.run(postgres.drop_databases(self.admin_dsn, *self.created_databases))
            self.created_databases = []

    def stop(self) -> None:
        """Everything, in order: the instances, the gateway, then what they need."""
        for instance in self.all_instances():
            instance.send(signal.SIGTERM)
        for instance in self.all_instances():
            instance.stop()
        for process in (self.nginx, self.redis):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.nginx = self.redis = None
        if self.sink is not None:
            self.sink.stop()
            self.sink = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        for log in self.logs:
            log.close()
        self.logs.clear()
