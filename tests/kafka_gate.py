"""A secured front door for the embedded broker, which has neither TLS nor usable SASL
(Tansu 0.6.0 does not wrap its listener in TLS, and with memory storage it keeps no SCRAM
users): the gate presents the broker as a managed Kafka would, with TLS that asks for a
client certificate, then SASL (PLAIN or SCRAM), then the client's requests passed
through untouched.

It answers SaslHandshake and SaslAuthenticate itself, relays ApiVersions (clients ask
before they authenticate) and closes a connection that sends anything else first, as
Kafka does. The broker must advertise the gate's address, so that clients come back
through it for every partition leader. What happened is kept in `events`, one line per
connection that got that far, each starting with the user it named (tests give each case
a user of its own: a connection of an earlier case may finish late).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
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
from tests.tcp_relay import pipe

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33
MECHANISMS = {"PLAIN": "", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
SCRAM_ITERATIONS = 4096


class KafkaGate:
    def __init__(
        self,
        broker_port: int,
        *,
        port: int | None = None,
        certificate: Path,
        key: Path,
        client_ca: Path,
        users: dict[str, str],
    ) -> None:
        self.port = port or free_port()
        self.events: list[str] = []
        self._broker_port = broker_port
        self._users = {name.encode(): password.encode() for name, password in users.items()}
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
                await asyncio.gather(pipe(reader, broker_writer), pipe(broker_reader, writer))
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
        mechanism, scram, user = "", None, b"?"
        while True:
            frame = await _frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[4:12])
            body = frame[14 + struct.unpack(">h", frame[12:14])[0] :]  # past the client id
            if api_key == API_VERSIONS:
                broker_writer.write(frame)
                writer.write(await _frame(broker_reader))
            elif api_key == SASL_HANDSHAKE and version == 1:  # v0 sends bare tokens next
                mechanism = body[2:].decode()
                error = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                handshake = SaslHandShakeResponse_v1(error, list(MECHANISMS))
                writer.write(_response(correlation, handshake.encode()))
            elif api_key == SASL_AUTHENTICATE and version <= 1 and mechanism in MECHANISMS:
                token = body[4:]
                reply: bytes | None
                if mechanism == "PLAIN":
                    user, reply = self._plain(token)
                    done = True
                elif scram is None:
                    scram = _Scram(MECHANISMS[mechanism], self._users)
                    reply, done = scram.first(token), False
                    user = scram.user
                else:
                    reply, done = scram.final(token), True
                answer = (0, None, reply) if reply is not None else (SASL_FAILED, "no", b"")
                if version == 0:
                    response = SaslAuthenticateResponse_v0(*answer)
                else:
                    response = SaslAuthenticateResponse_v1(*answer, 0)
                # Noted before the answer goes out: the client acts on it at once.
                if reply is None:
                    self.events.append(f"{user.decode()}: refused, wrong credentials")
                elif done:
                    self.events.append(f"{user.decode()}: authenticated with {mechanism}")
                writer.write(_response(correlation, response.encode()))
                await writer.drain()
                if reply is None or done:
                    return reply is not None
            else:
                self.events.append(f"?: refused, request {api_key} before authentication")
                return False
            await writer.drain()

    def _plain(self, token: bytes) -> tuple[bytes, bytes | None]:
        """RFC 4616: authorization id (none, or the user's own), user, password. The user
        named, and an empty reply if the password is theirs (else None)."""
        parts = token.split(b"\0")
        if len(parts) != 3 or parts[0] not in (b"", parts[1]):
            return b"?", None
        known = self._users.get(parts[1])
        ok = known is not None and hmac.compare_digest(known, parts[2])
        return parts[1], b"" if ok else None


class _Scram:
    """The server's side of SCRAM (RFC 5802, RFC 7677) for the gate's one user."""

    def __init__(self, hash_name: str, users: dict[bytes, bytes]) -> None:
        self._hash = hash_name
        self._users = users
        self._salt = os.urandom(16)
        self._stored_key = self._server_key = self._nonce = self._said = b""
        self.user = b"?"

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def first(self, client_first: bytes) -> bytes | None:
        """`n,,n=user,r=nonce` → `r=nonce+ours,s=salt,i=iterations`, or None."""
        if not client_first.startswith(b"n,,"):
            return None  # channel binding or an authorization id: not offered
        bare = client_first[3:]
        fields = dict(pair.split(b"=", 1) for pair in bare.split(b",") if b"=" in pair)
        self.user = fields.get(b"n", b"?").replace(b"=2C", b",").replace(b"=3D", b"=")
        password = self._users.get(self.user)
        if password is None or not fields.get(b"r"):
            return None
        salted = hashlib.pbkdf2_hmac(self._hash, password, self._salt, SCRAM_ITERATIONS)
        self._stored_key = hashlib.new(self._hash, self._hmac(salted, b"Client Key")).digest()
        self._server_key = self._hmac(salted, b"Server Key")
        self._nonce = fields[b"r"] + base64.b64encode(os.urandom(18))
        salt = base64.b64encode(self._salt)
        server_first = b"r=" + self._nonce + b",s=" + salt + b",i=%d" % SCRAM_ITERATIONS
        self._said = bare + b"," + server_first
        return server_first

    def final(self, client_final: bytes) -> bytes | None:
        """`c=biws,r=nonce,p=proof` → `v=signature` if the proof is right, or None."""
        without_proof, _, proof = client_final.rpartition(b",p=")
        if without_proof != b"c=biws,r=" + self._nonce:
            return None
        message = self._said + b"," + without_proof
        signature = self._hmac(self._stored_key, message)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), self._stored_key):
            return None
        return b"v=" + base64.b64encode(self._hmac(self._server_key, message))


async def _frame(reader: asyncio.StreamReader) -> bytes:
    size = await reader.readexactly(4)
    return size + await reader.readexactly(struct.unpack(">i", size)[0])


def _response(correlation: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation) + body
