"""Per-user favourites: `/v1/me/favourites`, keyed by the access token's `sub`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from common.errors import ApiError, documented
from films_service.catalogue import get_film
from films_service.deps import FilmId, SessionDep, SubjectDep
from films_service.models import Favourite, Film
from films_service.schemas import FilmOut

MAX_FAVOURITES = 1000

router = APIRouter(prefix="/v1/me/favourites", tags=["favourites"])


@router.get("", response_model=list[FilmOut], responses=documented(401))
async def favourites(user: SubjectDep, session: SessionDep) -> list[FilmOut]:
    rows = await session.scalars(
        select(Film).join(Favourite).where(Favourite.user_id == user).order_by(Film.title)
    )
    return [FilmOut.model_validate(film) for film in rows]


@router.put(
    "/{film_id}",
    status_code=204,
    responses=documented(401, (404, "film_not_found"), (409, "too_many_favourites"), 422),
)
async def add(user: SubjectDep, session: SessionDep, film_id: FilmId) -> Response:
    try:
        await add_favourite(session, user, film_id)
    except TooManyFavourites:
        raise ApiError(409, "too_many_favourites", f"at most {MAX_FAVOURITES} favourites") from None
    return Response(status_code=204)


class TooManyFavourites(Exception):
    """The user has MAX_FAVOURITES already."""


# Names this module's advisory locks apart from any other of the database's.
FAVOURITES_LOCK = 0x66617673


async def one_user_at_a_time(session: AsyncSession, user: str) -> None:
    """The first statement of a transaction that counts a user's favourites, then adds
    one: until it ends, another such transaction for the same user waits here. On
    PostgreSQL a transaction advisory lock on the user; on SQLite the transaction begins
    IMMEDIATE (common/sqlite.py), taking its one writer's lock from the count on."""
    if session.get_bind(Favourite).dialect.name == "postgresql":
        await session.execute(
            select(func.pg_advisory_xact_lock(FAVOURITES_LOCK, func.hashtext(user)))
        )
        return
    await session.execute(
        select(Favourite.user_id).where(Favourite.user_id == user).limit(1).with_for_update()
    )


async def add_favourite(session: AsyncSession, user: str, film_id: int) -> None:
    """Idempotent. Raises FilmNotFound for a film that does not exist, or that is deleted
    while this runs, and TooManyFavourites at the cap. One user's additions take turns,
    so the cap holds however many PUTs are in flight at once."""
    await one_user_at_a_time(session, user)
    await get_film(session, film_id)
    if await session.get(Favourite, (user, film_id)) is not None:
        await session.rollback()  # the turn ends now, not once the answer is sent
        return
    count = await session.scalar(
        select(func.count()).select_from(Favourite).where(Favourite.user_id == user)
    )
    if (count or 0) >= MAX_FAVOURITES:
        raise TooManyFavourites
    session.add(Favourite(user_id=user, film_id=film_id))
    try:
        await session.commit()
    except IntegrityError:  # the same PUT in parallel (done, then), or the film deleted
        await session.rollback()
        await get_film(session, film_id)


@router.delete("/{film_id}", status_code=204, responses=documented(401, 422))
async def remove(user: SubjectDep, session: SessionDep, film_id: FilmId) -> Response:
    await session.execute(
        delete(Favourite).where(Favourite.user_id == user, Favourite.film_id == film_id)
    )
    await session.commit()
    return Response(status_code=204)
