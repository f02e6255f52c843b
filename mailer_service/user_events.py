"""What the mailer does when auth reports a change to an account: when one is deleted, it
forgets that address's delivery history. Idempotent, as `common.user_events` requires."""

from __future__ import annotations

import logging

from common.events import UserEvent, UserEventType
from common.user_events import Handler
from mailer_service.history import History

log = logging.getLogger(__name__)


def handler(history: History) -> Handler:
    async def forget_deleted_users(event: UserEvent) -> None:
        if event.type is not UserEventType.DELETED or not event.email:
            return
        await history.forget(event.email.lower())
        log.info("user %s deleted: their delivery history is gone", event.user_id)

    return forget_deleted_users
