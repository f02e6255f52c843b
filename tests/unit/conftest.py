"""Auth's own database for unit tests of its rules: SQLite in the test's directory,
migrated, with key material made there (a module may define its own `settings`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.config import AuthSettings
from auth_service.keys import generate_missing
from auth_service.models import Base
from common.db import make_engine, make_sessionmaker, migrate
from tests.conftest import auth_settings_for


@pytest.fixture
async def settings(tmp_path: Path) -> AuthSettings:
    made = auth_settings_for(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/auth.db",
        retired_keys_dir=tmp_path / "retired",
    )
    generate_missing(made)
    return made


@pytest.fixture
async def sessions(settings: AuthSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url)
    await migrate(engine, Base)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
