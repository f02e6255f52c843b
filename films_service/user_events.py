"""What films does when auth reports a change to an account: a deleted user's favourites
go. Idempotent, as `common.user_events` requires: deleting what is gone is a no-op."""

from __future__ import annotations

import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events import UserEvent, UserEventType
from common.user_events import Handler
from films_service.models import Favourite

log = logging.getLogger(__name__)


def handler(sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def forget_deleted_users(event: UserEvent) -> None:
        if event.type is not UserEventType.DELETED:
            return
        async with sessions.begin() as session:
            await session.execute(delete(Favourite).where(Favourite.user_id == event.user_id))
        log.info("user %s deleted: their favourites are gone", event.user_id)

    return forget_deleted_users
