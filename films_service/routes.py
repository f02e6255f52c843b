from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from common.http import ApiError, admin_claims, request_claims
from films_service.catalogue import create_film, delete_film, list_films, update_film
from films_service.models import Film
from films_service.schemas import FilmIn, FilmOut, FilmPage, FilmPatch


async def get_session(request: Request):  # type: ignore[no-untyped-def]
    async with request.app.state.sessions() as session:
        yield session


ClaimsDep = Annotated[dict[str, Any], Depends(request_claims)]
AdminDep = Annotated[dict[str, Any], Depends(admin_claims)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
FilmId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Sort = Literal["id", "title", "-title", "year", "-year", "runtime", "-runtime"]

router = APIRouter(prefix="/v1/films", tags=["films"])


async def get_film_or_404(session: AsyncSession, film_id: int) -> Film:
    row = await session.get(Film, film_id)
    if row is None:
        raise ApiError(404, "film_not_found", "no film with that id")
    return row


@router.get("", response_model=FilmPage)
async def films(
    _: ClaimsDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$")] = None,
    year: Annotated[int | None, Query(ge=1870, le=2100)] = None,
    genre: Annotated[str | None, Query(min_length=1, max_length=40, pattern=r"^[^\x00]*$")] = None,
    sort: Sort = "id",
) -> FilmPage:
    items, total = await list_films(
        session, limit=limit, offset=offset, q=q, year=year, genre=genre, sort=sort
    )
    return FilmPage(
        items=[FilmOut.model_validate(f) for f in items], total=total, limit=limit, offset=offset
    )


@router.get("/{film_id}", response_model=FilmOut)
async def film(_: ClaimsDep, session: SessionDep, film_id: FilmId) -> FilmOut:
    return FilmOut.model_validate(await get_film_or_404(session, film_id))


@router.post("", status_code=201, response_model=FilmOut)
async def add(body: FilmIn, _: AdminDep, session: SessionDep) -> FilmOut:
    return FilmOut.model_validate(await create_film(session, body.model_dump()))


@router.patch("/{film_id}", response_model=FilmOut)
async def edit(body: FilmPatch, _: AdminDep, session: SessionDep, film_id: FilmId) -> FilmOut:
    changes = body.model_dump(exclude_unset=True)
    if not changes or any(value is None for value in changes.values()):
        raise ApiError(422, "invalid_request", "give at least one field, none of them null")
    row = await get_film_or_404(session, film_id)
    return FilmOut.model_validate(await update_film(session, row, changes))


@router.delete("/{film_id}", status_code=204)
async def remove(_: AdminDep, session: SessionDep, film_id: FilmId) -> Response:
    await delete_film(session, await get_film_or_404(session, film_id))
    return Response(status_code=204)
