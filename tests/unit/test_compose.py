"""docker-compose.yml cannot run here (no Docker), so check it against the code instead."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from auth_service.config import AuthSettings
from common.kafka import KafkaSettings
from films_service.config import FilmsSettings
from mailer_service.config import MailerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {"auth": "auth_service", "films": "films_service", "mailer": "mailer_service"}


def env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {
        (field.alias or f"{prefix}{name}").upper() for name, field in settings.model_fields.items()
    }


KNOWN_ENV = set().union(
    *(env_names(s) for s in (AuthSettings, FilmsSettings, MailerSettings, KafkaSettings))
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


def test_ports_agree_with_the_gateway() -> None:
    nginx = (ROOT / "infra/nginx/nginx.conf").read_text()
    assert f"server auth:{SERVICES['auth']['environment']['AUTH_PORT']};" in nginx
    assert f"server films:{SERVICES['films']['environment']['FILMS_PORT']};" in nginx
    for prefix in ("/v1/auth/", "/.well-known/", "/v1/films"):
        assert f"location {prefix}" in nginx


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
    for topic in ("auth.email-codes", "auth.email-codes.dlq"):
        assert topic in script


def test_two_mailers_share_the_partitions() -> None:
    assert SERVICES["mailer"]["deploy"]["replicas"] == 2


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
