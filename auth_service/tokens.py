"""Issuing RS256 access tokens and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from auth_service.config import AuthSettings
from common.clock import utcnow
from common.jwt import ACCESS_TOKEN_TYPE, ALGORITHM

# How a session was signed in, as its access tokens' `amr` claim says (RFC 8176; the
# registered values where one fits).
PASSWORD = "pwd"
EMAILED_CODE = "email"  # a code sent to the address (sign-up verification, code login)
APP_CODE = "otp"  # a code from the authenticator app (TOTP)
RECOVERY_CODE = "recovery"
POSSESSION = "pop"  # a passkey's signature: a key on a device or in a password manager
TWO_STEP = "mfa"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


def hash_refresh_token(token: str) -> str:
    # The token has 256 bits of entropy, so a plain SHA-256 suffices (nothing to brute-force).
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


class SigningKeys(Protocol):
    private_key: RSAPrivateKey
    kid: str

    def refresh(self) -> None: ...


class AccessTokenIssuer:
    def __init__(self, keys: SigningKeys, settings: AuthSettings) -> None:
        self._keys = keys
        self._issuer = settings.token_issuer
        self._audience = settings.token_audience
        self.ttl = timedelta(seconds=settings.access_token_ttl_seconds)
        # None: PyJWT's own JWT.
        self._typ = ACCESS_TOKEN_TYPE if settings.access_token_type == ACCESS_TOKEN_TYPE else None

    def issue(
        self,
        user_id: uuid.UUID,
        roles: list[str],
        session_id: uuid.UUID,
        amr: tuple[str, ...],
        application: str | None = None,
        scope: str | None = None,
        dpop_jkt: str | None = None,
    ) -> str:
        """An access token; `application` and `scope` for an application's session (an
        authorization code's): its `client_id` and the scopes granted to it (RFC 9068
        §2.2), by which a service tells it from the person and limits it; `dpop_jkt`, the
        thumbprint of the key it is bound to (RFC 9449 §6.1)."""
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "aud": self._audience,
            "jti": str(uuid.uuid4()),
            "roles": list(roles),
            # The login (refresh family) it belongs to: auth refuses it once that ends.
            "sid": str(session_id),
        }
        if amr:  # how the session was signed in: a service may ask for "mfa"
            claims["amr"] = list(amr)
        if application is not None:
            claims["client_id"] = application
            claims["scope"] = scope or ""
        if dpop_jkt is not None:
            claims["cnf"] = {"jkt": dpop_jkt}
        return self.sign(claims, typ=self._typ)

    def issue_to_client(self, client_id: str, scope: str, dpop_jkt: str | None = None) -> str:
        """An access token of a client's own (the client credentials grant): `sub` and
        `client_id` both the client's (RFC 9068 §2.2), no session and no roles; bound to
        the key `dpop_jkt` where given."""
        claims: dict[str, Any] = {
            "sub": client_id,
            "aud": self._audience,
            "jti": str(uuid.uuid4()),
            "roles": [],
            "client_id": client_id,
            "scope": scope,
        }
        if dpop_jkt is not None:
            claims["cnf"] = {"jkt": dpop_jkt}
        return self.sign(claims, typ=self._typ)

    def sign(
        self, claims: dict[str, Any], typ: str | None = None, ttl: timedelta | None = None
    ) -> str:
        """`claims` with `iss`, `iat` and `exp` (the access tokens' lifetime, or `ttl`),
        signed with the current key: an access token (`typ` AUTH_ACCESS_TOKEN_TYPE), an ID
        token (whose `aud` is an application; PyJWT's `typ` JWT), or a logout token (`typ`
        logout+jwt)."""
        now = utcnow()
        issued = {
            "iss": self._issuer,
            "iat": int(now.timestamp()),
            "exp": int((now + (ttl or self.ttl)).timestamp()),
            **claims,
        }
        self._keys.refresh()
        headers = {"kid": self._keys.kid} | ({"typ": typ} if typ else {})
        return jwt.encode(issued, self._keys.private_key, algorithm=ALGORITHM, headers=headers)
