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

from common.kafka import KafkaSettings, broker_check, missing_topics
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from tests.accounts import PASSWORD
from tests.conftest import Stack
from tests.kafka_gate import KafkaGate
from tests.support import self_signed_cert, unique_email

SECRET = "a sasl password for the tests"
# A user per case: the gate's events name it, and a connection of an earlier case may
# finish after the next case began.
USERS = ("services", "scram-sha-256", "scram-sha-512", "turned-away", "readiness", "strange-ca")


@dataclass
class SecuredBroker:
    gate: KafkaGate
    broker_cert: Path
    client_cert: Path
    client_key: Path

    def settings(self, user: str, **changes: object) -> dict[str, str]:
        """The environment of a service that may connect, as `user`."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.gate.port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SSL_CAFILE": str(self.broker_cert),
            "KAFKA_SSL_CERTFILE": str(self.client_cert),
            "KAFKA_SSL_KEYFILE": str(self.client_key),
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": SECRET,
        }
        env.update({f"KAFKA_{name.upper()}": str(value) for name, value in changes.items()})
        return {name: value for name, value in env.items() if value != "None"}

    def kafka(self, user: str, **changes: object) -> KafkaSettings:
        return KafkaSettings.model_validate(
            {
                name.removeprefix("KAFKA_").lower(): value
                for name, value in self.settings(user, **changes).items()
            }
        )

    def events(self, user: str) -> list[str]:
        return [event for event in self.gate.events if event.startswith(f"{user}: ")]


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
            users=dict.fromkeys(USERS, SECRET),
        )
        with gate:
            yield SecuredBroker(gate, broker_cert, client_cert, client_key)


def test_sign_up_mail_flows_through_a_broker_with_tls_and_sasl(
    stack: Stack, secured: SecuredBroker
) -> None:
    env = secured.settings("services")
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
        for service in (auth, mailer):
            ready = httpx.get(f"{service.url}/readyz", timeout=30).json()
            assert ready["checks"]["broker"] == "ok", ready
    finally:
        mailer.stop()
        auth.stop()
    events = secured.events("services")
    assert "services: authenticated with PLAIN" in events
    assert not [event for event in events if "refused" in event]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_signs_in_and_a_wrong_password_does_not(
    secured: SecuredBroker, mechanism: str
) -> None:
    """The mechanisms managed Kafkas use (MSK: SCRAM-SHA-512). Topic administration stands
    for every client: they all take the same options."""
    user = mechanism.lower()
    assert await missing_topics(secured.kafka(user, sasl_mechanism=mechanism), "x") == {"x"}
    assert f"{user}: authenticated with {mechanism}" in secured.events(user)
    wrong = secured.kafka(
        user, sasl_mechanism=mechanism, sasl_password="no", request_timeout_ms=3000
    )
    with pytest.raises(KafkaError):
        await missing_topics(wrong, "x")
    assert f"{user}: refused, wrong credentials" in secured.events(user)


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"sasl_password": "not the password"}, "turned-away: refused, wrong credentials"),
        (
            {
                "security_protocol": "SSL",
                "sasl_mechanism": None,
                "sasl_username": None,
                "sasl_password": None,
            },
            "?: refused, request 3 before authentication",
        ),
        ({"ssl_certfile": None, "ssl_keyfile": None}, None),  # no client certificate
    ],
    ids=["wrong password", "no sasl", "no client certificate"],
)
async def test_a_client_without_the_credentials_is_turned_away(
    secured: SecuredBroker, changes: dict[str, object], refusal: str | None
) -> None:
    before = len(secured.gate.events)
    with pytest.raises(KafkaError):
        await missing_topics(secured.kafka("turned-away", **changes, request_timeout_ms=3000), "x")
    if refusal is not None:
        assert refusal in secured.gate.events[before:]
    # Never, in any of these cases: the user only ever comes without what it needs.
    assert not [e for e in secured.events("turned-away") if "authenticated" in e]


async def test_the_broker_certificate_is_checked(secured: SecuredBroker, tmp_path: Path) -> None:
    """A client trusting another authority does not talk to this broker: not even its
    password leaves it."""
    stranger, _ = self_signed_cert(tmp_path)
    strange = secured.kafka("strange-ca", ssl_cafile=stranger, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await missing_topics(strange, "x")
    assert secured.events("strange-ca") == []
    assert await missing_topics(secured.kafka("strange-ca"), "x") == {"x"}  # the right one


async def test_readiness_sees_a_broker_that_refuses_us(secured: SecuredBroker) -> None:
    """The gate accepts TCP connections from anyone: only a Kafka exchange with our
    credentials tells a broker we can use from one that turns us away."""
    assert await broker_check(secured.kafka("readiness"))()
    wrong = secured.kafka("readiness", sasl_password="not the password")
    assert not await broker_check(wrong)()
    assert not await broker_check(secured.kafka("readiness", ssl_certfile=None, ssl_keyfile=None))()
