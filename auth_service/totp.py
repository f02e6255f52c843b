"""Two-step sign-in's parts, free of the account rules: TOTP codes (RFC 6238: HMAC-SHA1,
six digits, 30-second steps, what every authenticator app speaks), the sealed secret,
recovery codes, and the challenge a first step hands back.

- The secret must be readable to check a code, so it cannot be hashed: it is sealed with
  AES-GCM under a key derived (HKDF) from the code secret, and bound to its account, so a
  sealed secret copied onto another account's row does not open.
- A code is accepted for the current step or one either side (a clock off by a few
  seconds, a code typed as it changed), and only for a step newer than the last one
  accepted: a code seen over a shoulder, or replayed, does not work twice.
- Recovery codes are ten characters from a 32-letter alphabet (50 bits), stored only as
  an HMAC like the emailed codes: guessing one is no easier than guessing the password.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA1, SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.twofactor.hotp import HOTP
from sqlalchemy import BindParameter, ColumnElement, Exists, delete, exists, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from auth_service.models import Base, MfaChallenge, PasskeyChallenge, TotpFactor
from auth_service.tokens import hash_refresh_token

DIGITS = 6
STEP_SECONDS = 30
SKEW_STEPS = 1
SECRET_BYTES = 20  # RFC 4226's recommended length for HMAC-SHA1
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
RECOVERY_LENGTH = 10
RECOVERY_PURPOSE = "recovery"
_NONCE_BYTES = 12

_FACTORS = Base.metadata.tables[TotpFactor.__tablename__]
_CHALLENGES = Base.metadata.tables[MfaChallenge.__tablename__]
_OPEN_CHALLENGE = insert(_CHALLENGES)


class SecretBox:
    """Seals TOTP secrets at rest (AES-256-GCM, a fresh nonce each time) under a key
    derived from the code secret; opens those sealed under a retired one too."""

    def __init__(self, code_secret: bytes, retired: Sequence[bytes] = ()) -> None:
        self._aeads = [AESGCM(_box_key(s)) for s in (code_secret, *retired)]

    def seal(self, secret: bytes, user_id: uuid.UUID) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aeads[0].encrypt(nonce, secret, user_id.bytes)
        return base64.urlsafe_b64encode(sealed).decode()

    def open(self, sealed: str, user_id: uuid.UUID) -> tuple[bytes, bool]:
        """(the secret, whether it was sealed under the current key: if not, seal it
        again); `cryptography.exceptions.InvalidTag` if it was not sealed for this
        account under any key accepted."""
        raw = base64.urlsafe_b64decode(sealed)
        for i, aead in enumerate(self._aeads):
            try:
                return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], user_id.bytes), i == 0
            except InvalidTag:
                continue
        raise InvalidTag


def _box_key(code_secret: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"auth totp secret v1").derive(
        code_secret
    )


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def base32(secret: bytes) -> str:
    """As authenticator apps take a secret typed in: base32, no padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def otpauth_uri(secret: bytes, account: str, issuer: str) -> str:
    """The `otpauth://` URI a QR code carries (Google Authenticator's key URI format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = {
        "secret": base32(secret),
        "issuer": issuer,
        "algorithm": "SHA1",
        "digits": DIGITS,
        "period": STEP_SECONDS,
    }
    return f"otpauth://totp/{label}?{urlencode(query, quote_via=quote)}"


def step_at(when: datetime) -> int:
    return int(when.timestamp()) // STEP_SECONDS


def code_at(secret: bytes, step: int) -> str:
    # SHA-1 because RFC 6238's default is what every authenticator app computes; HMAC-SHA1
    # is not weakened by SHA-1's collisions.
    return HOTP(secret, DIGITS, SHA1()).generate(step).decode()  # noqa: S303


def matching_step(secret: bytes, code: str, now: datetime, after: int | None) -> int | None:
    """The step within the skew that `code` is right for and that is newer than `after`
    (the last step accepted), or None. Every step in the window is computed and compared
    in constant time, whichever matches."""
    current = step_at(now)
    found = None
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        right = hmac.compare_digest(code_at(secret, step), code)
        if right and (after is None or step > after):
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Fresh codes as shown to the user, `xxxxx-xxxxx`."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(given: str) -> str:
    """What a recovery code is stored and compared as: case, spaces and hyphens dropped."""
    return "".join(c for c in given.lower() if c not in " -")


def is_app_code(given: str) -> bool:
    return len(given) == DIGITS and given.isascii() and given.isdigit()


@dataclass(frozen=True)
class Challenge:
    """A first step passed: the token to present with the second, and its lifetime."""

    token: str
    expires_in: int


def has_factor(user_id: ColumnElement[uuid.UUID] | uuid.UUID | BindParameter[Any]) -> Exists:
    """Whether the account (a column or a value) has a confirmed authenticator: an EXISTS
    for a query's columns or conditions."""
    return exists(
        select(_FACTORS.c.user_id).where(
            _FACTORS.c.user_id == user_id, _FACTORS.c.confirmed_at.is_not(None)
        )
    )


async def open_challenge(
    db: AsyncConnection | AsyncSession,
    user_id: uuid.UUID,
    method: str,
    now: datetime,
    ttl: timedelta,
) -> Challenge:
    """A challenge for the account, in the caller's transaction (the login's Core
    connection, or an ORM session)."""
    token = secrets.token_urlsafe(32)
    row = {
        "token_hash": hash_refresh_token(token),  # 256 bits: a plain SHA-256 suffices
        "user_id": user_id,
        "method": method,
        "created_at": now,
        "expires_at": now + ttl,
        "attempts": 0,
    }
    await db.execute(_OPEN_CHALLENGE, row)
    return Challenge(token, int(ttl.total_seconds()))


async def drop_challenges(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Sign-ins waiting for their second step start again, and passkeys being added ask
    for new options: after a password change or reset, or when two-step sign-in is
    turned off."""
    await session.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))
    await drop_passkey_options(session, user_id)


async def drop_passkey_options(session: AsyncSession, user_id: uuid.UUID) -> None:
    """The options handed out to add a passkey to the account, unanswered: no longer
    answerable (sign-in options belong to no account and stay)."""
    await session.execute(delete(PasskeyChallenge).where(PasskeyChallenge.user_id == user_id))
