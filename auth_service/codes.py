"""One-time codes: six digits from `secrets`, stored only as HMAC-SHA256 under a server key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

CODE_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


class CodeHasher:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the code secret must be at least 16 bytes")
        self._secret = secret

    def digest(self, user_id: uuid.UUID, purpose: str, code: str) -> str:
        # Bound to account and purpose: a code cannot be replayed elsewhere.
        message = f"{purpose}:{user_id}:{code}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def matches(self, stored: str, user_id: uuid.UUID, purpose: str, code: str) -> bool:
        return hmac.compare_digest(stored, self.digest(user_id, purpose, code))
