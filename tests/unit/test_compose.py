"""docker-compose.yml cannot run here (no Docker), so check it against the code instead."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from auth_service.app import create_app as auth_app
from auth_service.config import AuthSettings
from common.events import (
    DELIVERY_STATUS_TOPIC,
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    USER_EVENTS_TOPIC,
    retry_topic,
)
from common.kafka import KafkaSettings
from films_service.app import create_app as films_app
from films_service.config import FilmsSettings
from infra import gateway
from mailer_service.app import create_app as mailer_app
from mailer_service.config import MailerSettings
from tests.conftest import auth_settings_for
from web_service.config import WebSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {
    "auth": "auth_service",
    "films": "films_service",
    "mailer": "mailer_service",
    "web": "web_service",
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {
        (field.alias or f"{prefix}{name}").upper() for name, field in settings.model_fields.items()
    }


KNOWN_ENV = set().union(
    *(
        env_names(s)
        for s in (AuthSettings, FilmsSettings, MailerSettings, WebSettings, KafkaSettings)
    ),
    {"LOG_FORMAT"},  # common/logs.py
)


@pytest.mark.parametrize("name", list(OURS))
def test_services_run_our_entry_points(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[:3] == ["python", "-m", OURS[name]]
    assert importlib.util.find_spec(OURS[name]) is not None
    assert "healthcheck" in SERVICES[name]


@pytest.mark.parametrize("name", list(OURS))
def test_every_environment_variable_is_one_the_code_reads(name: str) -> None:
    unknown = set(SERVICES[name].get("environment", {})) - KNOWN_ENV
    assert not unknown, f"{name} sets variables no settings class reads: {unknown}"


def test_the_gateway_config_is_the_generated_one() -> None:
    """infra/nginx/nginx.conf comes from infra/gateway.py, like the topology runner's."""
    committed = (ROOT / "infra/nginx/nginx.conf").read_text()
    assert committed == gateway.compose(), "run: python -m infra.gateway > infra/nginx/nginx.conf"


def test_ports_agree_with_the_gateway() -> None:
    nginx = (ROOT / "infra/nginx/nginx.conf").read_text()
    for name in OURS:
        port = SERVICES[name]["environment"][f"{name.upper()}_PORT"]
        assert f"server {name}:{port} " in nginx
    for prefix in ("/v1/auth/", "/.well-known/", "/v1/films", "/v1/me/", "/v1/deliveries"):
        assert f"location {prefix}" in nginx
    assert "location / { proxy_pass http://web; }" in nginx
    assert "web" in SERVICES["gateway"]["depends_on"]


def test_internal_endpoints_are_not_public() -> None:
    nginx = (ROOT / "infra/nginx/nginx.conf").read_text()
    for path in ("/readyz", "/metrics"):
        assert re.search(rf"location = {path} \{{[^}}]*return 404 ", nginx), path


def believed(address: ipaddress.IPv4Address, trusted_proxies: str) -> bool:
    return any(address in ipaddress.ip_network(p.strip()) for p in trusted_proxies.split(","))


def test_auth_believes_the_gateway_and_the_web_replicas_only() -> None:
    """The gateway, and the addresses Docker hands the replicas (the web's among them):
    never the bridge's .1, where clients of a published port may appear from."""
    network = COMPOSE["networks"]["default"]["ipam"]["config"][0]
    subnet = ipaddress.IPv4Network(network["subnet"])
    replicas = ipaddress.IPv4Network(network["ip_range"])
    gateway_address = ipaddress.IPv4Address(
        SERVICES["gateway"]["networks"]["default"]["ipv4_address"]
    )
    bridge = next(subnet.hosts())
    assert replicas.subnet_of(subnet) and gateway_address in subnet
    assert gateway_address not in replicas and bridge not in replicas
    auth = SERVICES["auth"]["environment"]["AUTH_TRUSTED_PROXIES"]
    assert believed(gateway_address, auth)
    assert all(believed(replica, auth) for replica in replicas.hosts())
    assert not believed(bridge, auth)
    web = SERVICES["web"]["environment"]["WEB_TRUSTED_PROXIES"]
    assert believed(gateway_address, web) and not believed(next(replicas.hosts()), web)


def test_auth_shares_limits_through_redis() -> None:
    auth = SERVICES["auth"]["environment"]
    assert auth["AUTH_REDIS_URL"].startswith("redis://redis:")
    assert "redis" in SERVICES and "redis" in SERVICES["auth"]["depends_on"]


@pytest.mark.parametrize("name", list(OURS))
def test_every_service_has_a_database_and_a_role_of_its_own(name: str) -> None:
    """Made by infra/postgres-init.sql (run for real by test_postgres_roles.py)."""
    url = SERVICES[name]["environment"][f"{name.upper()}_DATABASE_URL"]
    password = f"POSTGRES_{name.upper()}_PASSWORD"
    assert url == f"postgresql+asyncpg://{name}:${{{password}}}@postgres:5432/{name}"
    assert SERVICES["postgres"]["environment"][password] == f"${{{password}:?set {password}}}"
    init = (ROOT / "infra/postgres-init.sql").read_text()
    assert f"CREATE DATABASE {name} OWNER {name};" in init
    assert f"\\getenv password {password}\n" in init


def test_only_auth_holds_the_signing_keys_and_only_the_web_its_session_key() -> None:
    """Films and the mailer check tokens against auth's JWKS: a compromised one has no key
    to forge a token, or a web session, with."""
    mounts = {
        name: {volume.split(":")[0] for volume in service.get("volumes", [])}
        for name, service in SERVICES.items()
    }
    assert {name for name, used in mounts.items() if "auth-keys" in used} == {"auth", "keys"}
    assert {name for name, used in mounts.items() if "web-keys" in used} == {"web", "keys"}
    assert SERVICES["web"]["volumes"] == ["web-keys:/app/web-keys:ro"]
    assert set(COMPOSE["volumes"]) == {"auth-keys", "web-keys", "kafka-data", "pg-data"}
    for name in ("films", "mailer"):
        environment = SERVICES[name]["environment"]
        assert environment[f"{name.upper()}_JWKS_URL"] == "http://auth:8000/.well-known/jwks.json"
        assert "keys" not in SERVICES[name]["depends_on"]


def test_every_volume_our_image_mounts_is_a_directory_it_owns() -> None:
    """Docker fills an empty named volume with the image's directory there, owner and all;
    where the image has none, the volume is root's, and the `app` user cannot write to it
    (`keys generate` failed, and auth and web waited for it for ever)."""
    dockerfile = (ROOT / "infra/Dockerfile").read_text()
    made = re.search(r"mkdir -p ([^&]+)&&", dockerfile)
    owned = re.search(r"chown app ([^\n]+)", dockerfile)
    assert made and owned
    for name, service in SERVICES.items():
        if service.get("build") is None:
            continue
        for volume in service.get("volumes", []):
            target = volume.split(":")[1]
            assert target in made.group(1).split() and target in owned.group(1).split(), name


def test_the_web_runs_in_production_with_the_shared_session_key() -> None:
    web = SERVICES["web"]["environment"]
    assert web["WEB_ENV"] == "production"
    assert web["WEB_DATABASE_URL"].startswith("postgresql+asyncpg://")
    key = web["WEB_SESSION_KEY_PATH"]
    assert (
        key.startswith("/app/web-keys/")
        and "web-keys:/app/web-keys:ro" in SERVICES["web"]["volumes"]
    )
    keys = SERVICES["keys"]
    assert keys["environment"]["WEB_SESSION_KEY_PATH"] == key
    assert "web_service keys generate" in " ".join(keys["command"])
    assert "keys" in SERVICES["web"]["depends_on"]
    dockerfile = (ROOT / "infra/Dockerfile").read_text()
    for module in OURS.values():
        assert f"COPY {module} ./{module}" in dockerfile


def test_films_hears_user_events() -> None:
    """Films drops a deleted user's favourites from auth.user-events: it needs the broker,
    and the topic made before it subscribes."""
    films = SERVICES["films"]
    assert films["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert films["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    assert USER_EVENTS_TOPIC in " ".join(SERVICES["kafka-topics"]["command"])


@pytest.mark.parametrize("name", list(OURS))
def test_every_service_runs_two_replicas(name: str) -> None:
    assert SERVICES[name]["deploy"]["replicas"] == 2


def test_every_route_of_every_service_is_reachable_through_the_gateway(key_dir: Path) -> None:
    nginx = (ROOT / "infra/nginx/nginx.conf").read_text()
    locations = re.findall(r"location (/[\w./-]*)\s+\{ proxy_pass http://(\w+);", nginx)
    public = key_dir / "public.pem"
    apps = {
        "auth": auth_app(auth_settings_for(key_dir)),
        "films": films_app(FilmsSettings(public_key_path=public)),
        "mailer": mailer_app(MailerSettings(public_key_path=public)),
    }
    for service, app in apps.items():
        # From the OpenAPI paths: app.routes holds included routers, not their routes.
        paths = list(app.openapi()["paths"])
        assert any(p.startswith("/v1/") for p in paths), paths
        for path in paths:
            if not path.startswith(("/v1/", "/.well-known/")):
                continue  # health and metrics stay inside the network
            owners = [upstream for prefix, upstream in locations if path.startswith(prefix)]
            assert owners[:1] == [service], f"{path} of {service} is routed to {owners}"


def test_referenced_files_exist() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for ref in re.findall(r"\./(infra/[\w./-]+)", text):
        assert (ROOT / ref).exists(), ref
    assert (ROOT / "infra/Dockerfile").exists()


def test_kafka_is_kraft_and_topics_are_created() -> None:
    kafka = SERVICES["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in key for key in kafka)
    script = " ".join(SERVICES["kafka-topics"]["command"])
    retries = [retry_topic(t) for t in range(len(MailerSettings().retry_delays_seconds))]
    topics = (EMAIL_CODES_TOPIC, EMAIL_CODES_DLQ_TOPIC, DELIVERY_STATUS_TOPIC, USER_EVENTS_TOPIC)
    for topic in (*topics, *retries):
        assert topic in script


def test_no_secret_is_written_into_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text  # must come from the operator's environment
    assert "BEGIN" not in text and "PRIVATE KEY" not in text


def test_env_example_lists_every_variable_the_code_reads() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = {
        line.lstrip("# ").split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and not line.startswith("# ---")
    }
    assert listed == KNOWN_ENV, listed ^ KNOWN_ENV


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name for name in KNOWN_ENV if f"`{name}`" not in readme}
    assert not missing, f"add to the README's configuration table: {sorted(missing)}"
