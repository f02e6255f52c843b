"""Per-user favourites: `/v1/me/favourites`, keyed by the access token's `sub`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from common.http import ApiError, request_claims
from films_service.models import Favourite, Film
from films_service.routes import FilmId, SessionDep, get_film_or_404
from films_service.schemas import FilmOut

MAX_FAVOURITES = 1000

router = APIRouter(prefix="/v1/me/favourites", tags=["favourites"])


def subject(claims: Annotated[dict[str, Any], Depends(request_claims)]) -> str:
    return str(claims["sub"])


SubjectDep = Annotated[str, Depends(subject)]


@router.get("", response_model=list[FilmOut])
async def favourites(user: SubjectDep, session: SessionDep) -> list[FilmOut]:
    rows = await session.scalars(
        select(Film).join(Favourite).where(Favourite.user_id == user).order_by(Film.title)
    )
    return [FilmOut.model_validate(film) for film in rows]


@router.put("/{film_id}", status_code=204)
async def add(user: SubjectDep, session: SessionDep, film_id: FilmId) -> Response:
    await get_film_or_404(session, film_id)  # 404 for a film that does not exist
    if await session.get(Favourite, (user, film_id)) is None:
        count = await session.scalar(
            select(func.count()).select_from(Favourite).where(Favourite.user_id == user)
        )
        if (count or 0) >= MAX_FAVOURITES:
            raise ApiError(409, "too_many_favourites", f"at most {MAX_FAVOURITES} favourites")
        session.add(Favourite(user_id=user, film_id=film_id))
        try:
            await session.commit()
        except IntegrityError:  # a parallel PUT of the same film: idempotent anyway
            await session.rollback()
    return Response(status_code=204)


@router.delete("/{film_id}", status_code=204)
async def remove(user: SubjectDep, session: SessionDep, film_id: FilmId) -> Response:
    await session.execute(
        delete(Favourite).where(Favourite.user_id == user, Favourite.film_id == film_id)
    )
    await session.commit()
    return Response(status_code=204)
