"""Operator commands that touch the database: roles, auditing a key rotation, housekeeping."""

from __future__ import annotations

from sqlalchemy import select

from auth_service import audit
from auth_service.config import AuthSettings
from auth_service.housekeeping import sweep
from auth_service.models import Base, User
from common.db import make_engine, make_sessionmaker, migrate


class UnknownAccount(Exception):
    pass


async def set_role(settings: AuthSettings, email: str, role: str, grant: bool) -> list[str]:
    """Grant or revoke a role; it reaches tokens at the account's next login or refresh."""
    engine = make_engine(settings.database_url)
    try:
        await migrate(engine, Base)
        async with make_sessionmaker(engine).begin() as session:
            user = await session.scalar(
                select(User).where(User.email == email.strip().lower()).with_for_update()
            )
            if user is None:
                raise UnknownAccount(email)
            roles = set(user.roles)
            roles = roles | {role} if grant else roles - {role}
            user.roles = sorted(roles)
            audit.record(
                session,
                "role_granted" if grant else "role_revoked",
                user_id=user.id,
                email=user.email,
                role=role,
            )
            return user.roles
    finally:
        await engine.dispose()


async def record_rotation(settings: AuthSettings, event: str, **detail: str) -> None:
    """An operator's rotation, in the audit log (`key_rotation` with the kids, or
    `code_secret_rotation`: never a secret)."""
    engine = make_engine(settings.database_url)
    try:
        await migrate(engine, Base)
        async with make_sessionmaker(engine).begin() as session:
            audit.record(session, event, user_id=None, **detail)
    finally:
        await engine.dispose()


async def housekeep(settings: AuthSettings) -> dict[str, int]:
    """One housekeeping pass now, whichever process relays the outbox."""
    engine = make_engine(settings.database_url)
    try:
        await migrate(engine, Base)
        return await sweep(engine, settings)
    finally:
        await engine.dispose()
