"""RS256 access-token verification, shared by auth (/v1/auth/me) and films.

Only public keys are needed here: films verifies offline, never calling auth per request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.types import Options

ALGORITHM = "RS256"
# RFC 9068 §2.1: what an access token's `typ` may say (AUTH_ACCESS_TOKEN_TYPE). Unless it
# requires at+jwt, a verifier also takes a plain JWT's (PyJWT's default, and ID tokens'),
# and none at all (DESIGN.md's contract names only `kid`); any other kind of token (a
# logout token's logout+jwt) is refused by its type. An ID token handed back as a hint is
# a plain JWT, or untyped.
ACCESS_TOKEN_TYPE = "at+jwt"
PLAIN_TYPES = frozenset({"jwt", "application/jwt"})
TYPED_ACCESS = frozenset({ACCESS_TOKEN_TYPE, f"application/{ACCESS_TOKEN_TYPE}"})
ACCESS_TYPES = PLAIN_TYPES | TYPED_ACCESS
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti"]
# An ID token handed back as a hint: ours (signature, issuer), for any audience, old or not.
HINT_CHECKS: Options = {
    "require": ["iss", "sub", "aud"],
    "verify_aud": False,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}
LEEWAY = 5  # seconds of clock skew allowed on exp, nbf and iat
# Tokens whose signature and claims one TokenVerifier has checked, kept until they expire.
VERIFIED_TOKENS = 2048
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(Exception):
    """The bearer token is missing, malformed, expired or not ours."""


class UnknownKey(InvalidToken):
    """Signed with a `kid` this verifier does not hold (perhaps a key rotated since)."""


def load_public_key(path: Path) -> RSAPublicKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise SystemExit(
            f"public key {path} not found: run `python -m auth_service keys generate` "
            "or set the *_PUBLIC_KEY_PATH variable"
        ) from exc
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, RSAPublicKey):
        raise SystemExit(f"{path} is not an RSA public key")
    return key


def unverified_header(token: str) -> dict[str, Any]:
    """A JWT's header, read from its first segment alone, to pick the algorithm and key
    that `jwt.decode` then checks the whole token with. PyJWT's `get_unverified_header`
    reads and checks every segment, character by character in Python, so a token read
    with it and then decoded was read twice: for a DPoP proof, checked at every request,
    that was a good part of its cost. As strict: unpadded, canonical base64url, a JSON
    object, a string `kid` where there is one; `jwt.DecodeError` otherwise."""
    segment = token.partition(".")[0]
    if not BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise jwt.DecodeError("Invalid header padding")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise jwt.DecodeError("Invalid header padding")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise jwt.DecodeError("Invalid header string") from exc
    if not isinstance(header, dict):
        raise jwt.DecodeError("Invalid header string: must be a json object")
    if not isinstance(header.get("kid", ""), str):
        raise jwt.DecodeError("Key ID header parameter must be a string")
    return header


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: RSAPublicKey) -> dict[str, str]:
    """The key as a JWK, with `kid` its RFC 7638 thumbprint (stable across restarts)."""
    numbers = key.public_numbers()
    members = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


class Verifier(Protocol):
    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; raises InvalidToken (UnknownKey for a `kid` not held)."""
        ...

    async def refresh_unknown(self) -> bool:
        """Called after UnknownKey: True if the verifier learnt new keys worth a retry."""
        ...


def _typed(header: dict[str, Any], allowed: frozenset[str], *, untyped: bool = True) -> bool:
    """Whether a token's `typ` header is one of `allowed`, compared without case as media
    types are, or absent (where `untyped` is allowed)."""
    if "typ" not in header:
        return untyped
    typ = header["typ"]
    return isinstance(typ, str) and typ.lower() in allowed


def _copy(claims: dict[str, Any]) -> dict[str, Any]:
    """A caller's own copy: nothing it changes (its roles list included) is remembered."""
    copied = dict(claims)
    if isinstance(roles := claims.get("roles"), list):
        copied["roles"] = list(roles)
    return copied


class TokenVerifier:
    """Verifies access tokens against a fixed set of public keys, keyed by `kid`.

    A token that passed every check is remembered (the exact string, up to
    VERIFIED_TOKENS of them), so the next request carrying it costs a dict lookup and an
    expiry check instead of an RSA verification: nothing else about a token can change
    once checked, and time only moves its expiry closer. The memory belongs to this key
    set: a rotation or a JWKS fetch builds a new TokenVerifier, which starts empty.
    """

    def __init__(
        self,
        keys: Mapping[str, RSAPublicKey],
        *,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.time,
        require_at_jwt: bool = False,
    ) -> None:
        """`require_at_jwt`: an access token must say `typ` at+jwt (RFC 9068 §4), once
        auth has typed them so for longer than one lives."""
        if not keys:
            raise ValueError("at least one public key is required")
        self._keys = dict(keys)
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._require_at_jwt = require_at_jwt
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}

    @classmethod
    def from_public_key(
        cls, key: RSAPublicKey, *, issuer: str, audience: str, require_at_jwt: bool = False
    ) -> TokenVerifier:
        return cls(
            {public_jwk(key)["kid"]: key},
            issuer=issuer,
            audience=audience,
            require_at_jwt=require_at_jwt,
        )

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    async def refresh_unknown(self) -> bool:
        return False  # a fixed key set learns nothing

    def verify(self, token: str) -> dict[str, Any]:
        known = self._verified.get(token)
        if known is not None:
            expires, claims = known
            if self._clock() < expires + LEEWAY:
                return _copy(claims)
            del self._verified[token]
            raise InvalidToken("Signature has expired")
        claims = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (float(claims["exp"]), claims)
        return _copy(claims)

    def signed(self, token: str) -> dict[str, Any]:
        """The claims of a token one of these keys signed for our issuer, whatever its
        audience and even if expired: an ID token handed back as OpenID Connect's
        `id_token_hint`, which names a sign-in and grants nothing. Never a credential."""
        return self._verify(token, hint=True)

    def _verify(self, token: str, hint: bool = False) -> dict[str, Any]:
        try:
            header = unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        # Pin the algorithm before touching keys: rules out `none` and HS256-with-public-key.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unexpected algorithm")
        if hint and not _typed(header, PLAIN_TYPES):
            raise InvalidToken("not an ID token")
        strict = self._require_at_jwt
        access = TYPED_ACCESS if strict else ACCESS_TYPES
        if not hint and not _typed(header, access, untyped=not strict):
            raise InvalidToken("not an access token")
        key = self._keys.get(header.get("kid", ""))
        if key is None:
            if "kid" in header or len(self._keys) != 1:
                raise UnknownKey("unknown key id")
            key = next(iter(self._keys.values()))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=None if hint else self._audience,
                issuer=self._issuer,
                options=HINT_CHECKS if hint else {"require": REQUIRED_CLAIMS},
                leeway=LEEWAY,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("malformed roles claim")
        return claims
