from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from common.http import ApiError, request_claims
from films_service.catalogue import list_films
from films_service.models import Film
from films_service.schemas import FilmOut, FilmPage


async def get_session(request: Request):  # type: ignore[no-untyped-def]
    async with request.app.state.sessions() as session:
        yield session


ClaimsDep = Annotated[dict[str, Any], Depends(request_claims)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

router = APIRouter(prefix="/v1/films", tags=["films"])


@router.get("", response_model=FilmPage)
async def films(
    _: ClaimsDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$")] = None,
    year: Annotated[int | None, Query(ge=1870, le=2100)] = None,
) -> FilmPage:
    items, total = await list_films(session, limit=limit, offset=offset, q=q, year=year)
    return FilmPage(
        items=[FilmOut.model_validate(f) for f in items], total=total, limit=limit, offset=offset
    )


@router.get("/{film_id}", response_model=FilmOut)
async def film(
    _: ClaimsDep, session: SessionDep, film_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> FilmOut:
    row = await session.get(Film, film_id)
    if row is None:
        raise ApiError(404, "film_not_found", "no film with that id")
    return FilmOut.model_validate(row)
