"""Reading the catalogue, and seeding it on first start."""

from __future__ import annotations

import json
from importlib import resources

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from films_service.models import Film


async def seed_if_empty(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions.begin() as session:
        if await session.scalar(select(func.count()).select_from(Film)):
            return 0
        data = json.loads(resources.files("films_service").joinpath("data/films.json").read_text())
        session.add_all(Film(**row) for row in data)
        return len(data)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_films(
    session: AsyncSession, *, limit: int, offset: int, q: str | None, year: int | None
) -> tuple[list[Film], int]:
    query = select(Film)
    if q:
        query = query.where(
            func.lower(Film.title).like(f"%{_escape_like(q.lower())}%", escape="\\")
        )
    if year is not None:
        query = query.where(Film.year == year)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(Film.id).limit(limit).offset(offset))
    return list(rows), total
