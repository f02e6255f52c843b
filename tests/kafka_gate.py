"""A secured front door for the embedded broker, which has neither TLS nor usable SASL
(Tansu 0.6.0 does not wrap its listener in TLS, and with memory storage it keeps no SCRAM
users): the gate presents the broker as a managed Kafka would, with TLS that asks for a
client certificate, then SASL/PLAIN, then the client's requests passed through untouched.

It answers SaslHandshake and SaslAuthenticate itself, relays ApiVersions (clients ask
before they authenticate) and closes a connection that sends anything else first, as
Kafka does. The broker must advertise the gate's address, so that clients come back
through it for every partition leader. What happened is kept in `events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from pathlib import Path

from aiokafka.protocol.admin import (
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v1,
)

from infra.ports import free_port

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33


class KafkaGate:
    def __init__(
        self,
        broker_port: int,
        *,
        port: int | None = None,
        certificate: Path,
        key: Path,
        client_ca: Path,
        username: str,
        password: str,
    ) -> None:
        self.port = port or free_port()
        self.events: list[str] = []
        self._broker_port = broker_port
        self._username, self._password = username.encode(), password.encode()
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
        self._tls.load_cert_chain(certificate, key)
        self._tls.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> KafkaGate:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._tls), self._loop
        ).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection(
                "127.0.0.1", self._broker_port
            )
        except OSError:
            writer.close()
            return
        try:
            if await self._authenticate(reader, writer, broker_reader, broker_writer):
                await asyncio.gather(_pipe(reader, broker_writer), _pipe(broker_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # a client that went away, or failed our TLS handshake
        finally:
            writer.close()
            broker_writer.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        broker_reader: asyncio.StreamReader,
        broker_writer: asyncio.StreamWriter,
    ) -> bool:
        mechanism = b""
        while True:
            frame = await _frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[4:12])
            body = frame[14 + struct.unpack(">h", frame[12:14])[0] :]  # past the client id
            if api_key == API_VERSIONS:
                broker_writer.write(frame)
                writer.write(await _frame(broker_reader))
            elif api_key == SASL_HANDSHAKE and version == 1:  # v0 sends bare tokens next
                mechanism = body[2:]
                error = 0 if mechanism == b"PLAIN" else UNSUPPORTED_SASL_MECHANISM
                handshake = SaslHandShakeResponse_v1(error, ["PLAIN"])
                writer.write(_response(correlation, handshake.encode()))
            elif api_key == SASL_AUTHENTICATE and version <= 1 and mechanism == b"PLAIN":
                ok = self._plain(body[4:])
                self.events.append("authenticated" if ok else "refused: wrong credentials")
                answer = (0, None, b"") if ok else (SASL_AUTHENTICATION_FAILED, "no", b"")
                if version == 0:
                    response = SaslAuthenticateResponse_v0(*answer)
                else:
                    response = SaslAuthenticateResponse_v1(*answer, 0)
                writer.write(_response(correlation, response.encode()))
                await writer.drain()
                return ok
            else:
                self.events.append(f"refused: request {api_key} before authentication")
                return False
            await writer.drain()

    def _plain(self, token: bytes) -> bool:
        """RFC 4616: authorization id (none, or the user's own), user, password."""
        parts = token.split(b"\0")
        return (
            len(parts) == 3
            and parts[0] in (b"", parts[1])
            and (parts[1], parts[2]) == (self._username, self._password)
        )


async def _frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


def _response(correlation: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation) + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
