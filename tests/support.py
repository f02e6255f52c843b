"""Real parts for tests: a recording SMTP server, token minting, waiting, services that
must be there. Service processes are infra.processes.ServiceProcess (re-exported)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import jwt
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from common.jwt import public_jwk
from infra.ports import free_port
from infra.processes import ROOT, ServiceProcess
from infra.smtp_sink import code_in


@dataclass
class Received:
    rcpt: str
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def code(self) -> str | None:
        return code_in(self.raw)


@dataclass
class RecordingHandler:
    """Keeps every accepted message; `replies` lets a test script 4xx/5xx answers per address."""

    messages: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append(Received(rcpt.lower(), envelope.original_content or b""))
        return "250 Message accepted for delivery"

    def to(self, rcpt: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.rcpt == rcpt.lower()]

    def wait_for(self, rcpt: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(rcpt)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{count} email(s) to {rcpt} not received in {timeout}s")

    async def await_all(self, rcpts: list[str], timeout: float = 60.0) -> None:
        """Until at least one email reached each of `rcpts`."""
        wanted = {r.lower() for r in rcpts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if wanted <= {m.rcpt for m in self.messages}:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not every one of {len(wanted)} recipients got an email")

    async def await_for(self, rcpt: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        """`wait_for` for tests whose event loop also runs the code under test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(rcpt)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} email(s) to {rcpt} not received in {timeout}s")


def service_missing(service: str, reason: str) -> NoReturn:
    """A server a test needs is not there: skip the test, saying why; under CI=true, fail
    it instead, so a CI run can never pass by skipping (infra/test.sh provides them all)."""
    message = f"{service} is not available ({reason})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(message)


def start_smtp(handler: Any, **kwargs: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s")


async def wait_until_async(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """wait_until for a test whose event loop runs what it waits for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s")


TEST_ISSUER = "http://localhost:8000"
TEST_AUDIENCE = "api"

# Applications the test stack's auth knows (AUTH_OAUTH_CLIENTS). Nothing listens at their
# redirect URIs: the tests read the answer from the URL the browser is sent to.
SPA_REDIRECT = "http://127.0.0.1:9/callback"  # a loopback port: any program could listen
SPA_WEB_REDIRECT = "https://diary.example.test/callback"  # only the application's site
SPA_SIGNED_OUT = "https://diary.example.test/signed-out"  # after RP-initiated logout
SERVER_REDIRECT = "https://app.example.test/oauth/callback?from=films"
FIRST_PARTY_REDIRECT = "http://localhost:9/signed-in"
SERVER_SECRET = "test-server-secret-0123456789abcdefghijklmnop"
RESOURCE_SECRET = "test-api-secret-0123456789abcdefghijklmnopqr"
SIGNED_REDIRECT = "https://box-office.example.test/callback"
PUSHED_REDIRECT = "https://tickets.example.test/callback"
PUSHED_SECRET = "test-pushed-secret-0123456789abcdefghijklmno"
BOUND_SECRET = "test-bound-secret-0123456789abcdefghijklmnop"
# The private halves of test-signed's keys (private_key_jwt): made anew by each test
# process, so no private key is stored; auth is given the public halves.
SIGNED_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SIGNED_EC_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNED_JWKS = {
    "keys": [
        RSAAlgorithm.to_jwk(SIGNED_RSA_KEY.public_key(), as_dict=True) | {"kid": "rsa-1"},
        ECAlgorithm.to_jwk(SIGNED_EC_KEY.public_key(), as_dict=True) | {"kid": "ec-1"},
    ]
}
TEST_OAUTH_CLIENTS = [
    {
        "client_id": "test-spa",
        "name": "Film Diary",
        "redirect_uris": [SPA_REDIRECT, SPA_WEB_REDIRECT],
        "post_logout_redirect_uris": [SPA_SIGNED_OUT],
    },
    {
        "client_id": "test-server",
        "name": "Cinema Club",
        "redirect_uris": [SERVER_REDIRECT],
        "secret_sha256": hashlib.sha256(SERVER_SECRET.encode()).hexdigest(),
        "scopes": ["openid", "email"],  # not the films API
    },
    {  # a service: it introspects tokens, calls the films API as itself, signs nobody in
        "client_id": "test-api",
        "name": "Reviews API",
        "secret_sha256": hashlib.sha256(RESOURCE_SECRET.encode()).hexdigest(),
        "introspect": True,
        "client_credentials": True,
    },
    {  # proves itself with an assertion it signs (private_key_jwt), and has no secret
        "client_id": "test-signed",
        "name": "Box Office",
        "redirect_uris": [SIGNED_REDIRECT],
        "jwks": SIGNED_JWKS,
        "introspect": True,
        "client_credentials": True,
    },
    {  # sends its authorization requests to auth first (RFC 9126), and must
        "client_id": "test-pushed",
        "name": "Ticket Desk",
        "redirect_uris": [PUSHED_REDIRECT],
        "secret_sha256": hashlib.sha256(PUSHED_SECRET.encode()).hexdigest(),
        "require_pushed_authorization_requests": True,
    },
    {  # a service that gets tokens bound to its key alone (RFC 9449 DPoP)
        "client_id": "test-bound",
        "name": "Recommendations",
        "secret_sha256": hashlib.sha256(BOUND_SECRET.encode()).hexdigest(),
        "client_credentials": True,
        "dpop_bound_access_tokens": True,
    },
    {
        "client_id": "test-first-party",
        "name": "Films Mobile",
        "redirect_uris": [FIRST_PARTY_REDIRECT],
        "trusted": True,
    },
]


class Minter:
    """Signs access tokens with the test stack's real private key, as auth would."""

    def __init__(self, key_dir: Path) -> None:
        private_key = serialization.load_pem_private_key(
            (key_dir / "private.pem").read_bytes(), password=None
        )
        assert isinstance(private_key, RSAPrivateKey)
        self.private_key = private_key
        self.public_pem = (key_dir / "public.pem").read_bytes()
        self.kid = public_jwk(private_key.public_key())["kid"]

    @staticmethod
    def claims(**overrides: object) -> dict[str, object]:
        """Valid claims; an override of None removes that claim."""
        now = int(time.time())
        base: dict[str, object] = {
            "iss": TEST_ISSUER,
            "sub": str(uuid.uuid4()),
            "aud": TEST_AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "jti": str(uuid.uuid4()),
            "roles": [],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(
        self, key: Any = None, headers: dict[str, Any] | None = None, **claims: object
    ) -> str:
        return jwt.encode(
            self.claims(**claims),
            key or self.private_key,
            algorithm="RS256",
            headers={"kid": self.kid, **(headers or {})},
        )


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost: (cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


__all__ = [
    "ROOT",
    "Minter",
    "Received",
    "RecordingHandler",
    "ServiceProcess",
    "self_signed_cert",
    "service_missing",
    "start_smtp",
    "unique_email",
    "wait_until",
]
