"""Refresh tokens: opaque, stored hashed, rotated on every use; a reused one revokes its family.

A family is one login's chain of rotations: a session (`user_sessions.py`). Presenting a
token that was already rotated means two parties hold it (the legitimate client and a
thief), so the whole family dies. A disabled account's tokens are refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit
from auth_service.config import AuthSettings
from auth_service.errors import InvalidGrant
from auth_service.models import RefreshToken, User, UserSession
from auth_service.tokens import AccessTokenIssuer, TokenPair, hash_refresh_token, new_refresh_token
from auth_service.user_sessions import Client, end_sessions, open_session, touch
from common.clock import utcnow


@dataclass
class RefreshTokens:
    settings: AuthSettings
    sessions: async_sessionmaker[AsyncSession]
    access_tokens: AccessTokenIssuer

    def issue(
        self, session: AsyncSession, user: User, client: Client, session_id: uuid.UUID | None = None
    ) -> TokenPair:
        """A new pair, in a new session unless one is given; the rows join the caller's
        transaction."""
        if session_id is None:
            session_id = open_session(session, user.id, client)
        refresh = new_refresh_token()
        now = utcnow()
        session.add(
            RefreshToken(
                user_id=user.id,
                family_id=session_id,
                token_hash=hash_refresh_token(refresh),
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            )
        )
        return TokenPair(
            access_token=self.access_tokens.issue(user.id, user.roles, session_id),
            refresh_token=refresh,
            expires_in=int(self.access_tokens.ttl.total_seconds()),
        )

    async def reissue(self, session: AsyncSession, user: User, session_id: uuid.UUID) -> TokenPair:
        """A pair replacing the session's current one (as a rotation would): after a change
        the tokens should reflect, e.g. a new email address."""
        await self._revoke_where(session, RefreshToken.family_id == session_id)
        return self.issue(session, user, Client(), session_id)

    async def rotate(self, presented: str, client: Client) -> TokenPair:
        """The next pair of the token's family. Raises InvalidGrant for unknown, expired or
        revoked tokens; a rotated one presented again also revokes the whole family."""
        now = utcnow()
        token_hash = hash_refresh_token(presented)
        async with self.sessions() as session:
            # One statement finds and rotates a live token: of two concurrent uses, one wins.
            live = (
                await session.execute(
                    update(RefreshToken)
                    .where(
                        RefreshToken.token_hash == token_hash,
                        RefreshToken.revoked_at.is_(None),
                        RefreshToken.expires_at > now,
                    )
                    .values(revoked_at=now)
                    .returning(RefreshToken.user_id, RefreshToken.family_id)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if live is None:
                await self._refuse(session, token_hash, now, client.ip)
            user = await session.get(User, live.user_id)
            if user is None or not user.email_verified or user.disabled:
                await session.rollback()
                raise InvalidGrant
            await touch(session, live.family_id, client)
            pair = self.issue(session, user, client, live.family_id)
            await session.commit()
            return pair

    async def _refuse(
        self, session: AsyncSession, token_hash: str, now: datetime, ip: str | None
    ) -> NoReturn:
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        if row is not None and row.revoked_at is not None and row.expires_at > now:
            ended = await session.scalar(
                select(UserSession.ended_at).where(UserSession.id == row.family_id)
            )
            if ended is not None:  # logged out, or ended by the user or an admin: no theft
                raise InvalidGrant
            # Rotated already: someone else holds a copy. End the family.
            await end_sessions(session, UserSession.id == row.family_id)
            audit.record(session, "refresh_reuse", user_id=row.user_id, ip=ip)
            await session.commit()
        raise InvalidGrant

    async def revoke(self, presented: str, ip: str | None = None) -> None:
        """Logout: end the presented token's whole login session."""
        async with self.sessions.begin() as session:
            row = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(presented))
            )
            if row is None:
                return
            await end_sessions(session, UserSession.id == row.family_id)
            audit.record(session, "logout", user_id=row.user_id, ip=ip)

    @staticmethod
    async def revoke_all(session: AsyncSession, user_id: uuid.UUID) -> None:
        """End every session of the account."""
        await end_sessions(session, UserSession.user_id == user_id)

    @staticmethod
    async def _revoke_where(session: AsyncSession, *where: ColumnElement[bool]) -> None:
        await session.execute(
            update(RefreshToken)
            .where(*where, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
