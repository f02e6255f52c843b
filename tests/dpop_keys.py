"""A DPoP client's side (RFC 9449): a key pair of its own and the proofs it signs, built
here from the RFC (no Python OAuth client library makes DPoP proofs), with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

# RFC 7638's members of each kind of key.
MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


class ProofKey:
    """A client's key: ES256 (P-256), RS256 or EdDSA (Ed25519)."""

    def __init__(self, alg: str = "ES256", rsa_bits: int = 2048, exponent: int = 65537) -> None:
        self.alg = alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=exponent, key_size=rsa_bits)
            self.jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)

    @property
    def jkt(self) -> str:
        """The key's RFC 7638 thumbprint, what auth binds tokens to."""
        members = {m: self.jwk[m] for m in MEMBERS[self.jwk["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()

    def proof(
        self,
        method: str,
        url: str,
        access_token: str | None = None,
        *,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A proof for `method` at `url` (and `access_token`), now; `header` and `claims`
        add to or replace what a good proof says (None removes a member)."""
        body: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode()).digest()
            body["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        body = {k: v for k, v in (body | claims).items() if v is not None}
        head = {"typ": "dpop+jwt", "jwk": self.jwk} | (header or {})
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=head)

    def authorization(self, method: str, url: str, access_token: str) -> dict[str, str]:
        """The headers of a request to a resource with a token bound to this key."""
        return {
            "Authorization": f"DPoP {access_token}",
            "DPoP": self.proof(method, url, access_token),
        }
