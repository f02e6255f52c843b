"""The admin's view of back-channel logout notices not yet told (`backchannel.py`): read
them, and have those given up on tried again once their application is back. Both are
audited, as every admin read of account data is."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit
from auth_service.config import OAuthClient
from auth_service.errors import NotListening
from auth_service.models import LogoutNotice
from auth_service.user_sessions import Caller
from common.clock import utcnow


@dataclass
class LogoutNotices:
    sessions: async_sessionmaker[AsyncSession]
    clients: dict[str, OAuthClient]

    async def listed(
        self,
        caller: Caller,
        *,
        failed: bool | None,
        client_id: str | None,
        limit: int,
        offset: int,
        ip: str | None = None,
    ) -> tuple[list[LogoutNotice], int]:
        """Notices not yet told (`failed`: only those given up on, or only the others),
        oldest first, and how many there are in all."""
        which: list[ColumnElement[bool]] = []
        if failed is not None:
            given_up = LogoutNotice.failed_at
            which.append(given_up.is_not(None) if failed else given_up.is_(None))
        if client_id is not None:
            which.append(LogoutNotice.client_id == client_id)
        async with self.sessions.begin() as session:
            total = await session.scalar(
                select(func.count()).select_from(LogoutNotice).where(*which)
            )
            items = await session.scalars(
                select(LogoutNotice)
                .where(*which)
                .order_by(LogoutNotice.created_at, LogoutNotice.session_id)
                .limit(limit)
                .offset(offset)
            )
            audit.record(
                session,
                "logout_notices_listed",
                ip=ip,
                admin=str(caller.user.id),
                client=client_id,
                failed=failed,
            )
            return list(items), total or 0

    async def retry(self, caller: Caller, client_id: str | None, ip: str | None = None) -> int:
        """The notices given up on, of one application or of every one, tried again from
        now with every attempt afresh; how many. Only an application that listens now
        (NotListening for a named one that does not): a notice of one that does not would
        be dropped as told."""
        listening = [c.client_id for c in self.clients.values() if c.backchannel_logout_uri]
        if client_id is not None and client_id not in listening:
            raise NotListening
        which = [
            LogoutNotice.failed_at.is_not(None),
            LogoutNotice.client_id.in_([client_id] if client_id else listening),
        ]
        async with self.sessions.begin() as session:
            retried = await session.execute(
                update(LogoutNotice)
                .where(*which)
                .values(failed_at=None, attempts=0, next_attempt_at=utcnow(), error=None)
            )
            count: int = retried.rowcount or 0  # type: ignore[attr-defined]  # an UPDATE's
            audit.record(
                session,
                "logout_notices_retried",
                ip=ip,
                admin=str(caller.user.id),
                client=client_id,
                count=count,
            )
        return count
