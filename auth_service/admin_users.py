"""The admin API's rules: find users, read one, disable or enable them, grant or revoke roles,
turn off two-step sign-in for someone who lost both their app and their recovery codes, and
remove an account's passkeys (a device lost or stolen, its owner unable to sign in to do it).

Every call is audited with the acting admin, reads too. The admin role is read from the
database on every call, not from the token, whose claims can be up to one access-token
lifetime old. An admin cannot lock themselves out (disable their own account or drop their
own admin role), so the last admin cannot leave the system without one by accident.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit, events
from auth_service.errors import (
    AdminSelfLockout,
    Forbidden,
    MfaSessionRequired,
    OwnTwoStep,
    UserNotFound,
)
from auth_service.models import Passkey, TotpFactor, User
from auth_service.outbox import OutboxRelay
from auth_service.refresh import RefreshTokens
from auth_service.totp import drop_passkey_options
from auth_service.two_step import turn_off
from auth_service.user_sessions import Caller
from common.clock import utcnow
from common.events import EmailEventType, UserEventType

ADMIN = "admin"


def require_admin(caller: Caller, two_step: bool = False) -> None:
    """Forbidden without the admin role; with `two_step` (AUTH_ADMIN_REQUIRES_MFA),
    MfaSessionRequired unless the caller's session passed two-step sign-in."""
    if ADMIN not in caller.user.roles:
        raise Forbidden
    if two_step and not caller.two_step:
        raise MfaSessionRequired


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def with_factor(session: AsyncSession, user_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the accounts have two-step sign-in on."""
    found = await session.scalars(
        select(TotpFactor.user_id).where(
            TotpFactor.user_id.in_(user_ids), TotpFactor.confirmed_at.is_not(None)
        )
    )
    return set(found)


async def passkey_counts(session: AsyncSession, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many passkeys each of the accounts has (those with none left out)."""
    rows = await session.execute(
        select(Passkey.user_id, func.count())
        .where(Passkey.user_id.in_(user_ids))
        .group_by(Passkey.user_id)
    )
    return {user_id: count for user_id, count in rows.tuples()}


@dataclass(frozen=True)
class Found:
    """An account as the admin API shows it."""

    user: User
    mfa: bool
    passkeys: int = 0


async def found(session: AsyncSession, users: list[User]) -> list[Found]:
    ids = [user.id for user in users]
    on, keys = await with_factor(session, ids), await passkey_counts(session, ids)
    return [Found(user, user.id in on, keys.get(user.id, 0)) for user in users]


@dataclass
class UserAdmin:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay

    async def search(
        self, caller: Caller, q: str | None, limit: int, offset: int, ip: str | None = None
    ) -> tuple[list[Found], int]:
        """Users whose address contains `q` (all users without one), oldest first."""
        query = select(User)
        if q:
            pattern = f"%{_escape_like(q.lower())}%"
            query = query.where(User.email.like(pattern, escape="\\"))
        async with self.sessions.begin() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(User.created_at, User.id).limit(limit).offset(offset)
            )
            audit.record(session, "users_listed", ip=ip, admin=str(caller.user.id), q=q)
            return await found(session, list(rows)), total or 0

    async def get(self, caller: Caller, user_id: uuid.UUID, ip: str | None = None) -> Found:
        async with self.sessions.begin() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise UserNotFound
            admin = str(caller.user.id)
            audit.record(
                session, "user_read", user_id=user.id, email=user.email, ip=ip, admin=admin
            )
            return (await found(session, [user]))[0]

    async def update(
        self,
        caller: Caller,
        user_id: uuid.UUID,
        *,
        disabled: bool | None = None,
        roles: list[str] | None = None,
        mfa: bool | None = None,
        ip: str | None = None,
    ) -> Found:
        """Apply what was given; disabling ends every session of the account at once."""
        admin = str(caller.user.id)
        async with self.sessions.begin() as session:
            user = await self._locked(session, caller, user_id)
            if user.id == caller.user.id and (
                disabled is True or (roles is not None and ADMIN not in roles)
            ):
                raise AdminSelfLockout
            if user.id == caller.user.id and mfa is False:
                raise OwnTwoStep
            if roles is not None:
                self._set_roles(session, user, roles, admin, ip)
            if disabled is not None and disabled != user.disabled:
                await self._set_disabled(session, user, disabled, admin, ip)
            if mfa is False and await with_factor(session, [user.id]):
                await turn_off(session, user, user.language(), ip, admin=admin)
            shown = (await found(session, [user]))[0]
        self.relay.notify()
        return shown

    async def remove_passkeys(
        self, caller: Caller, user_id: uuid.UUID, ip: str | None = None
    ) -> Found:
        """Every passkey of the account goes, and any options handed out to add one; the
        owner is told by email when there were any (the call is audited either way). The
        sessions they opened stay (disable the account to end those too)."""
        async with self.sessions.begin() as session:
            user = await self._locked(session, caller, user_id)
            gone = await session.execute(
                delete(Passkey)
                .where(Passkey.user_id == user.id)
                .execution_options(synchronize_session=False)
            )
            await drop_passkey_options(session, user.id)
            removed: int = gone.rowcount  # type: ignore[attr-defined]  # a DELETE's CursorResult
            audit.record(
                session,
                "passkeys_removed",
                user_id=user.id,
                email=user.email,
                ip=ip,
                admin=str(caller.user.id),
                count=removed,
            )
            if removed:  # the owner hears of a change, not of a call that changed nothing
                notice = EmailEventType.PASSKEYS_REMOVED_NOTICE
                events.email_notice(session, notice, user.email, user.language())
            shown = (await found(session, [user]))[0]
        if removed:
            self.relay.notify()
        return shown

    @staticmethod
    async def _locked(session: AsyncSession, caller: Caller, user_id: uuid.UUID) -> User:
        """The target's row, locked with the caller's in id order (two admins acting on
        each other cannot deadlock). The caller must still be an admin now, not only when
        the request began: two admins demoting each other at once left none."""
        locked = await session.scalars(
            select(User)
            .where(User.id.in_({caller.user.id, user_id}))
            .order_by(User.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        rows = {row.id: row for row in locked}
        me = rows.get(caller.user.id)
        if me is None or ADMIN not in me.roles or me.disabled:
            raise Forbidden
        user = rows.get(user_id)
        if user is None:
            raise UserNotFound
        return user

    @staticmethod
    def _set_roles(
        session: AsyncSession, user: User, roles: list[str], admin: str, ip: str | None
    ) -> None:
        old, new = set(user.roles), set(roles)
        for role in sorted(old ^ new):
            event = "role_granted" if role in new else "role_revoked"
            audit.record(
                session, event, user_id=user.id, email=user.email, ip=ip, role=role, admin=admin
            )
        user.roles = sorted(new)

    @staticmethod
    async def _set_disabled(
        session: AsyncSession, user: User, disabled: bool, admin: str, ip: str | None
    ) -> None:
        if disabled:
            user.disabled_at = utcnow()
            await RefreshTokens.revoke_all(session, user.id)
        else:
            user.disabled_at = None
        event = "user_disabled" if disabled else "user_enabled"
        audit.record(session, event, user_id=user.id, email=user.email, ip=ip, admin=admin)
        kind = UserEventType.DISABLED if disabled else UserEventType.ENABLED
        events.user_event(session, kind, user.id)
