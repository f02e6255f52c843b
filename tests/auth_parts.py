"""auth's account rules without HTTP, on a real database, for the tests that drive
`Accounts` straight (settings with keys made in a test's folder: `auth_settings`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.accounts import Accounts
from auth_service.codes import CodeHasher, Codes
from auth_service.config import AuthSettings
from auth_service.keys import KeyRing
from auth_service.models import Base
from auth_service.passwords import PasswordHasher
from auth_service.refresh import RefreshTokens
from auth_service.throttle import AddressGuard
from auth_service.tokens import AccessTokenIssuer
from bench.harness import key_material


def auth_settings(directory: Path, url: str, **overrides: Any) -> AuthSettings:
    return key_material(directory, database_url=url, **overrides)


def accounts_for(
    settings: AuthSettings, sessions: async_sessionmaker[AsyncSession], hasher: PasswordHasher
) -> Accounts:
    issuer = AccessTokenIssuer(KeyRing(settings), settings)
    return Accounts(
        settings=settings,
        sessions=sessions,
        passwords=hasher,
        codes=Codes(CodeHasher(b"a code secret for the test"), timedelta(minutes=10), 5),
        tokens=RefreshTokens(settings, sessions, issuer),
        relay=cast(Any, SimpleNamespace(notify=lambda: None)),  # no broker here
        guard=AddressGuard(settings),
    )


async def count(sessions: async_sessionmaker[AsyncSession], model: type[Base]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
