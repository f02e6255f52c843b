"""One-time codes: six digits from `secrets`, stored only as HMAC-SHA256 under a server key,
bound to account and purpose. A code is single use: `consumed_at` is set when it is used,
burned by its last wrong try, or superseded by a newer code; a try is spent atomically
before comparing, so parallel guesses cannot exceed the budget."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.models import OneTimeCode
from common.clock import utcnow

CODE_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


class CodeHasher:
    """HMACs codes under the current secret; also matches those stored under retired
    secrets (AUTH_RETIRED_CODE_SECRETS), so replacing the secret strands nothing."""

    def __init__(self, secret: bytes, retired: Sequence[bytes] = ()) -> None:
        if any(len(s) < 16 for s in (secret, *retired)):
            raise ValueError("a code secret must be at least 16 bytes")
        self._secrets = (secret, *retired)

    def digest(self, user_id: uuid.UUID, purpose: str, code: str) -> str:
        """Under the current secret: what a new code is stored as."""
        return self.digests(user_id, purpose, code)[0]

    def digests(self, user_id: uuid.UUID, purpose: str, code: str) -> list[str]:
        """Under every accepted secret, the current one first: what a stored code may be."""
        # Bound to account and purpose: a code cannot be replayed elsewhere.
        message = f"{purpose}:{user_id}:{code}".encode()
        return [hmac.new(s, message, hashlib.sha256).hexdigest() for s in self._secrets]

    def matches(self, stored: str, user_id: uuid.UUID, purpose: str, code: str) -> bool:
        found = [hmac.compare_digest(stored, d) for d in self.digests(user_id, purpose, code)]
        return any(found)


@dataclass(frozen=True)
class IssuedCode:
    code: str  # the plaintext, for the email only: never stored or logged
    expires_at: datetime


@dataclass
class Codes:
    hasher: CodeHasher
    ttl: timedelta
    max_attempts: int

    def issue(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        purpose: str,
        now: datetime,
        password_hash: str | None = None,
        new_email: str | None = None,
    ) -> IssuedCode:
        """A fresh code, added to the caller's transaction (retire older ones first)."""
        code = new_code()
        expires_at = now + self.ttl
        session.add(
            OneTimeCode(
                user_id=user_id,
                purpose=purpose,
                code_hmac=self.hasher.digest(user_id, purpose, code),
                password_hash=password_hash,
                new_email=new_email,
                expires_at=expires_at,
                created_at=now,
            )
        )
        return IssuedCode(code, expires_at)

    @staticmethod
    def _unused(user_id: uuid.UUID, purpose: str) -> tuple[ColumnElement[bool], ...]:
        return (
            OneTimeCode.user_id == user_id,
            OneTimeCode.purpose == purpose,
            OneTimeCode.consumed_at.is_(None),
        )

    async def latest(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str
    ) -> OneTimeCode | None:
        """The newest unused code for this purpose, expired or not."""
        query = (
            select(OneTimeCode)
            .where(*self._unused(user_id, purpose))
            .order_by(OneTimeCode.id.desc())
            .limit(1)
        )
        return (await session.execute(query)).scalar_one_or_none()

    async def drop_passwords(self, session: AsyncSession, user_id: uuid.UUID, purpose: str) -> None:
        """The unused codes of this purpose no longer carry a password to set."""
        unused = self._unused(user_id, purpose)
        await session.execute(update(OneTimeCode).where(*unused).values(password_hash=None))

    async def retire(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str, now: datetime
    ) -> None:
        unused = self._unused(user_id, purpose)
        await session.execute(update(OneTimeCode).where(*unused).values(consumed_at=now))

    async def would_match(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str, code: str
    ) -> bool:
        """Whether `consume` would take this code now. Spends no try: only for a caller
        that goes on to `consume` either way, so each request still costs one."""
        row = await self.latest(session, user_id, purpose)
        return (
            row is not None
            and row.expires_at > utcnow()
            and row.attempts < self.max_attempts
            and self.hasher.matches(row.code_hmac, user_id, purpose, code)
        )

    async def consume(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str, code: str
    ) -> OneTimeCode | None:
        """The matching live code, now used up; or None (and one try spent)."""
        row = await self.latest(session, user_id, purpose)
        now = utcnow()
        if row is None or row.expires_at <= now:
            return None
        # Spend a try before comparing, atomically: parallel guesses cannot exceed the budget.
        attempts = (
            await session.execute(
                update(OneTimeCode)
                .where(
                    OneTimeCode.id == row.id,
                    OneTimeCode.consumed_at.is_(None),
                    OneTimeCode.attempts < self.max_attempts,
                )
                .values(attempts=OneTimeCode.attempts + 1)
                .returning(OneTimeCode.attempts)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
        if attempts is None:
            return None
        matches = self.hasher.matches(row.code_hmac, user_id, purpose, code)
        if matches or attempts >= self.max_attempts:
            # Used, or burned by its last wrong try.
            await session.execute(
                update(OneTimeCode)
                .where(OneTimeCode.id == row.id)
                .values(consumed_at=now)
                .execution_options(synchronize_session=False)
            )
        return row if matches else None
