"""The mailer's SMTP client against aiosmtpd servers set up each way it must handle."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from common.events import EmailCodeEvent, EmailEventType
from infra.ports import free_port
from mailer_service.config import MailerSettings
from mailer_service.smtp import SendError, SmtpPool
from mailer_service.templates import render
from tests.support import RecordingHandler, self_signed_cert, start_smtp, unique_email

USER, PASSWORD = "mailer", "s3cret-smtp-pass"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    # handled=False on failure, or aiosmtpd leaves the client waiting (see DESIGN.md).
    return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)


class Server:
    def __init__(self, **kwargs: Any) -> None:
        self.handler = RecordingHandler()
        self.controller = start_smtp(self.handler, **kwargs)
        self.port = self.controller.port


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        started.append(Server(**kwargs))
        return started[-1]

    yield make
    for server in started:
        server.controller.stop()


def message_to(address: str) -> Any:
    event = EmailCodeEvent(type=EmailEventType.EMAIL_VERIFICATION, email=address, code="123456")
    return render(event, sender="Auth <no-reply@example.com>", product="Films")


async def send_one(settings: MailerSettings, address: str) -> None:
    pool = SmtpPool(settings)
    try:
        await pool.send(message_to(address))
    finally:
        await pool.close()


async def test_plain(server_factory: Any) -> None:
    server = server_factory()
    to = unique_email()
    await send_one(MailerSettings(smtp_port=server.port), to)
    assert server.handler.wait_for(to)[0].code == "123456"


def tls_server_options(mode: str, context: ssl.SSLContext) -> dict[str, Any]:
    """aiosmtpd set up for `mode`, requiring AUTH."""
    auth = {"authenticator": authenticator, "auth_required": True}
    if mode == "starttls":
        return {"tls_context": context, "require_starttls": True, **auth}
    # aiosmtpd does not count an implicit-TLS transport as TLS for its AUTH gate; it is TLS.
    return {"ssl_context": context, "auth_require_tls": False, **auth}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_with_auth(
    server_factory: Any, server_tls: ssl.SSLContext, cert: Any, mode: Literal["starttls", "tls"]
) -> None:
    server = server_factory(**tls_server_options(mode, server_tls))
    to = unique_email()
    settings = MailerSettings(
        smtp_port=server.port,
        smtp_tls=mode,
        smtp_ca_file=cert[0],
        smtp_username=USER,
        smtp_password=PASSWORD,
    )
    await send_one(settings, to)
    assert len(server.handler.wait_for(to)) == 1


async def test_untrusted_certificate_is_refused(
    server_factory: Any, server_tls: ssl.SSLContext
) -> None:
    server = server_factory(ssl_context=server_tls)
    with pytest.raises(SendError) as failure:
        await send_one(MailerSettings(smtp_port=server.port, smtp_tls="tls"), unique_email())
    assert not failure.value.permanent


async def test_wrong_password_is_transient_not_a_hang(
    server_factory: Any, server_tls: ssl.SSLContext, cert: Any
) -> None:
    server = server_factory(**tls_server_options("starttls", server_tls))
    settings = MailerSettings(
        smtp_port=server.port,
        smtp_tls="starttls",
        smtp_ca_file=cert[0],
        smtp_username=USER,
        smtp_password="wrong",
        smtp_timeout_seconds=5,
    )
    with pytest.raises(SendError) as failure:
        await send_one(settings, unique_email())
    assert "authentication" in failure.value.reason
    assert not failure.value.permanent


@pytest.mark.parametrize(
    ("reply", "permanent"), [("550 5.1.1 no such user", True), ("451 4.3.0 try later", False)]
)
async def test_refusals_are_classified(server_factory: Any, reply: str, permanent: bool) -> None:
    server = server_factory()
    to = unique_email()
    server.handler.replies[to] = reply
    with pytest.raises(SendError) as failure:
        await send_one(MailerSettings(smtp_port=server.port), to)
    assert failure.value.permanent is permanent


async def test_refused_connection_is_transient() -> None:
    with pytest.raises(SendError) as failure:
        await send_one(
            MailerSettings(smtp_port=free_port(), smtp_timeout_seconds=2), unique_email()
        )
    assert not failure.value.permanent


async def test_connections_are_reused(server_factory: Any) -> None:
    sessions: list[object] = []
    server = server_factory()
    original = server.handler.handle_DATA

    async def counting(srv: Any, session: Any, envelope: Any) -> str:
        sessions.append(session)
        return await original(srv, session, envelope)

    server.handler.handle_DATA = counting
    pool = SmtpPool(MailerSettings(smtp_port=server.port, smtp_connections=1))
    try:
        for _ in range(5):
            await pool.send(message_to(unique_email()))
    finally:
        await pool.close()
    assert len(sessions) == 5
    assert len({id(s) for s in sessions}) == 1
