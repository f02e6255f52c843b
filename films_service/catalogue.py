"""Reading and editing the catalogue, and seeding it on first start."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from films_service.cache import bump_version
from films_service.models import CatalogueVersion, Film, FilmGenre

SORTS = {
    "id": Film.id,
    "title": Film.title,
    "-title": Film.title.desc(),
    "year": Film.year,
    "-year": Film.year.desc(),
    "runtime": Film.runtime_minutes,
    "-runtime": Film.runtime_minutes.desc(),
}


Lock = bool | dict[str, bool]


class FilmNotFound(LookupError):
    """No film has that id."""


# `get_film`'s locks. An edit takes FOR NO KEY UPDATE, which favourites being added to
# the film (their foreign key's check takes KEY SHARE) need not wait for; a deletion
# takes FOR UPDATE, which they do. SQLite has one lock for both (BEGIN IMMEDIATE).
EDIT: Lock = {"key_share": True}
DELETE: Lock = True


async def get_film(session: AsyncSession, film_id: int, *, lock: Lock = False) -> Film:
    """The film, or FilmNotFound. `lock` (EDIT or DELETE) reads it afresh and locked: an
    edit or deletion of the film in flight elsewhere is waited for, and what it left is
    what this one changes (or a 404, had it deleted the film)."""
    film = await session.get(Film, film_id, with_for_update=lock, populate_existing=bool(lock))
    if film is None:
        raise FilmNotFound(film_id)
    return film


async def seed_if_empty(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Instances starting together on one database seed it once: the first to lock the
    version row (migration 0002 makes it) seeds, the others then find its films."""
    async with sessions.begin() as session:
        await session.execute(select(CatalogueVersion.id).with_for_update())
        if await session.scalar(select(func.count()).select_from(Film)):
            return 0
        data = json.loads(resources.files("films_service").joinpath("data/films.json").read_text())
        session.add_all(Film(**row) for row in data)
        await bump_version(session)
        return len(data)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_films(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    q: str | None = None,
    year: int | None = None,
    genre: str | None = None,
    sort: str = "id",
) -> tuple[list[Film], int]:
    query = select(Film)
    if q:
        query = query.where(
            func.lower(Film.title).like(f"%{_escape_like(q.lower())}%", escape="\\")
        )
    if year is not None:
        query = query.where(Film.year == year)
    if genre:
        query = query.where(
            Film.id.in_(
                select(FilmGenre.film_id).where(func.lower(FilmGenre.name) == genre.lower())
            )
        )
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = [SORTS[sort]] if sort == "id" else [SORTS[sort], Film.id]
    rows = await session.scalars(query.order_by(*order).limit(limit).offset(offset))
    return list(rows), total


async def create_film(session: AsyncSession, fields: dict[str, Any]) -> Film:
    film = Film(**fields)
    session.add(film)
    await bump_version(session)
    await session.commit()
    return film


async def update_film(session: AsyncSession, film_id: int, fields: dict[str, Any]) -> Film:
    film = await get_film(session, film_id, lock=EDIT)
    for name, value in fields.items():
        setattr(film, name, value)
    await bump_version(session)
    await session.commit()  # the film in memory is the answer: a deletion may follow now
    return film


async def delete_film(session: AsyncSession, film_id: int) -> None:
    await session.delete(await get_film(session, film_id, lock=DELETE))
    await bump_version(session)
    await session.commit()
