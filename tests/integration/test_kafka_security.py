"""The services reach a broker that wants TLS, a client certificate and SASL, and only with
the settings they are given: the broker is the embedded Tansu behind tests/kafka_gate.py,
which checks all three."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import KafkaError

from common.kafka import KafkaSettings, missing_topics
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from tests.accounts import PASSWORD
from tests.conftest import Stack
from tests.kafka_gate import KafkaGate
from tests.support import self_signed_cert, unique_email

USERNAME, SECRET = "auth-and-mailer", "a sasl password for the tests"


@dataclass
class SecuredBroker:
    gate: KafkaGate
    broker_cert: Path
    client_cert: Path
    client_key: Path

    def settings(self, **changes: object) -> dict[str, str]:
        """The environment of a service that may connect."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.gate.port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SSL_CAFILE": str(self.broker_cert),
            "KAFKA_SSL_CERTFILE": str(self.client_cert),
            "KAFKA_SSL_KEYFILE": str(self.client_key),
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": USERNAME,
            "KAFKA_SASL_PASSWORD": SECRET,
        }
        env.update({f"KAFKA_{name.upper()}": str(value) for name, value in changes.items()})
        return {name: value for name, value in env.items() if value != "None"}

    def kafka(self, **changes: object) -> KafkaSettings:
        return KafkaSettings.model_validate(
            {
                name.removeprefix("KAFKA_").lower(): value
                for name, value in self.settings(**changes).items()
            }
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    work = tmp_path_factory.mktemp("kafka-tls")
    (work / "broker").mkdir()
    (work / "client").mkdir()
    broker_cert, broker_key = self_signed_cert(work / "broker")
    client_cert, client_key = self_signed_cert(work / "client")
    gate_port = free_port()
    with EmbeddedBroker(advertised=f"127.0.0.1:{gate_port}") as broker:
        gate = KafkaGate(
            broker.port,
            port=gate_port,
            certificate=broker_cert,
            key=broker_key,
            client_ca=client_cert,
            username=USERNAME,
            password=SECRET,
        )
        with gate:
            yield SecuredBroker(gate, broker_cert, client_cert, client_key)


def test_sign_up_mail_flows_through_a_broker_with_tls_and_sasl(
    stack: Stack, secured: SecuredBroker
) -> None:
    env = secured.settings()
    auth = stack.spawn("auth_service", "auth-kafka-tls", **env)
    mailer = stack.spawn("mailer_service", "mailer-kafka-tls", **env)
    try:
        email = unique_email("tls")
        r = httpx.post(
            f"{auth.url}/v1/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30
        )
        assert r.status_code == 202, r.text
        # Relay (producer and admin) and mailer (consumer) all went through the gate.
        assert stack.smtp.wait_for(email, timeout=60)[0].code
    finally:
        mailer.stop()
        auth.stop()
    assert "authenticated with PLAIN" in secured.gate.events
    assert not [event for event in secured.gate.events if event.startswith("refused")]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_signs_in_and_a_wrong_password_does_not(
    secured: SecuredBroker, mechanism: str
) -> None:
    """The mechanisms managed Kafkas use (MSK: SCRAM-SHA-512). Topic administration stands
    for every client: they all take the same options."""
    before = len(secured.gate.events)
    assert await missing_topics(secured.kafka(sasl_mechanism=mechanism), "x") == {"x"}
    wrong = secured.kafka(sasl_mechanism=mechanism, sasl_password="no", request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await missing_topics(wrong, "x")
    events = secured.gate.events[before:]
    assert f"authenticated with {mechanism}" in events
    assert events[-1] == "refused: wrong credentials"


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"sasl_password": "not the password"}, "refused: wrong credentials"),
        (
            {
                "security_protocol": "SSL",
                "sasl_mechanism": None,
                "sasl_username": None,
                "sasl_password": None,
            },
            "refused: request 3 before authentication",
        ),
        ({"ssl_certfile": None, "ssl_keyfile": None}, None),  # no client certificate
    ],
    ids=["wrong password", "no sasl", "no client certificate"],
)
async def test_a_client_without_the_credentials_is_turned_away(
    secured: SecuredBroker, changes: dict[str, object], refusal: str | None
) -> None:
    before = list(secured.gate.events)
    with pytest.raises(KafkaError):
        await missing_topics(secured.kafka(**changes, request_timeout_ms=3000), "x")
    events = secured.gate.events[len(before) :]
    if refusal is not None:
        assert refusal in events
    assert not [event for event in events if event.startswith("authenticated")]


async def test_the_broker_certificate_is_checked(secured: SecuredBroker, tmp_path: Path) -> None:
    """A client trusting another authority does not talk to this broker: not even its
    password leaves it."""
    stranger, _ = self_signed_cert(tmp_path)
    before = list(secured.gate.events)
    with pytest.raises(KafkaError):
        await missing_topics(secured.kafka(ssl_cafile=stranger, request_timeout_ms=3000), "x")
    assert secured.gate.events[len(before) :] == []
    assert await missing_topics(secured.kafka(), "x") == {"x"}  # while the right one does
