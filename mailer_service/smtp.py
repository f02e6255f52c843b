"""Sending over SMTP through a small pool of reused connections, with failures sorted into
transient (retry later) and permanent (dead-letter now)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import aiosmtplib

from mailer_service.config import MailerSettings
from mailer_service.templates import Outgoing


class SendError(Exception):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        # A server's reply is decoded with surrogateescape and may hold anything: the
        # reason is stored and published, so it is made plain UTF-8 without NULs here.
        reason = reason.encode("utf-8", "replace").decode().replace("\x00", "")
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def _tls_context(settings: MailerSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    )
    if not settings.smtp_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def classify(exc: Exception) -> SendError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [error.code for error in exc.recipients]
        permanent = all(500 <= code < 600 for code in codes)
        return SendError(f"recipient refused: {codes}", permanent=permanent)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Our credentials, not the recipient: retry so an operator can fix it in time.
        return SendError(f"SMTP authentication failed: {exc.code}", permanent=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendError(f"SMTP {exc.code}: {exc.message}", permanent=500 <= exc.code < 600)
    return SendError(f"{type(exc).__name__}: {exc}", permanent=False)


class SmtpPool:
    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.Queue()
        for _ in range(settings.smtp_connections):
            self._idle.put_nowait(None)  # connected lazily
        self._all: set[aiosmtplib.SMTP] = set()

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self._settings
        tls = s.smtp_tls
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=tls == "tls",
            start_tls=tls == "starttls",
            tls_context=_tls_context(s) if tls != "none" else None,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout_seconds,
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        client = await self._idle.get()
        try:
            if client is None or not client.is_connected:
                client = self._new_client()
                self._all.add(client)
                await client.connect()
            yield client
        except BaseException:
            if client is not None:
                self._all.discard(client)
                client.close()
            client = None
            raise
        finally:
            self._idle.put_nowait(client)

    async def send(self, message: Outgoing) -> None:
        try:
            async with self._connection() as client:
                # An internationalised address (EAI) needs the server's SMTPUTF8.
                options = [] if message.recipient.isascii() else ["SMTPUTF8"]
                await client.sendmail(
                    message.sender, [message.recipient], message.data, mail_options=options
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise classify(exc) from exc
        except ValueError as exc:  # aiosmtplib refuses the address, e.g. with a space in it
            raise SendError(f"cannot be sent: {exc}", permanent=True) from exc

    async def close(self) -> None:
        for client in list(self._all):
            if client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await asyncio.wait_for(client.quit(), 2)
            client.close()
        self._all.clear()
