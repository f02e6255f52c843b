"""A passkey authenticator in software, for the tests: it answers the options auth hands
out as a browser with a platform authenticator would (WebAuthn Level 3's JSON forms,
attestation "none", ES256 keys), and can be told to misbehave the ways an attacker's or a
broken one would."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# authenticatorData flags (WebAuthn §6.1)
USER_PRESENT, USER_VERIFIED, BACKUP_ELIGIBLE, BACKED_UP, ATTESTED = 0x01, 0x04, 0x08, 0x10, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Key:
    credential_id: bytes
    private: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class Device:
    """Passkeys made for `origin`'s pages. `counting`: the authenticator keeps a signature
    counter (security keys do; synced passkeys send 0)."""

    origin: str = "http://localhost:8000"
    counting: bool = False
    verifies_user: bool = True
    keys: dict[bytes, Key] = field(default_factory=dict)

    def create(
        self, options: dict[str, Any], *, credential_id: bytes | None = None
    ) -> dict[str, Any]:
        """`navigator.credentials.create({publicKey: options})`, then `.toJSON()`."""
        rp_id = options["rp"]["id"]
        excluded = {from_b64url(c["id"]) for c in options.get("excludeCredentials", [])}
        assert not excluded & {k.credential_id for k in self.keys.values() if k.rp_id == rp_id}
        cid = credential_id or os.urandom(16)
        key = Key(
            cid, ec.generate_private_key(ec.SECP256R1()), rp_id, from_b64url(options["user"]["id"])
        )
        self.keys[cid] = key
        numbers = key.private.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        attested = bytes(16) + struct.pack(">H", len(cid)) + cid + cose
        auth_data = self._auth_data(key, ATTESTED | BACKUP_ELIGIBLE | BACKED_UP) + attested
        client_data = self._client_data("webauthn.create", options["challenge"])
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(cid),
            "rawId": b64url(cid),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
        }

    def get(self, options: dict[str, Any], key: Key | None = None) -> dict[str, Any]:
        """`navigator.credentials.get({publicKey: options})`, then `.toJSON()`: the
        passkey the user picks (`key`, else the only one this device has for the site)."""
        if key is None:
            mine = [k for k in self.keys.values() if k.rp_id == options["rpId"]]
            assert len(mine) == 1, "pick one"
            key = mine[0]
        auth_data = self._auth_data(key, BACKUP_ELIGIBLE | BACKED_UP)
        client_data = self._client_data("webauthn.get", options["challenge"])
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = key.private.sign(signed, ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(key.credential_id),
            "rawId": b64url(key.credential_id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(key.user_handle),
            },
        }

    def _auth_data(self, key: Key, flags: int) -> bytes:
        if self.counting:
            key.sign_count += 1
        flags |= USER_PRESENT | (USER_VERIFIED if self.verifies_user else 0)
        rp_hash = hashlib.sha256(key.rp_id.encode()).digest()
        return rp_hash + bytes([flags]) + struct.pack(">I", key.sign_count)

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        ).encode()
