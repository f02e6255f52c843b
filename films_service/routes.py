"""The catalogue over HTTP: list, search and read for any caller with a token; create,
edit and delete for admins. Reads are answered from the process's response cache
(films_service.cache); every write clears it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from common.bearer import AdminDep, ClaimsDep
from common.errors import ApiError, documented
from films_service.cache import ResponseCache, cached
from films_service.catalogue import create_film, delete_film, get_film, list_films, update_film
from films_service.deps import FilmId, SessionDep
from films_service.schemas import FilmIn, FilmOut, FilmPage, FilmPatch

NOT_FOUND = (404, "film_not_found")

Sort = Literal["id", "title", "-title", "year", "-year", "runtime", "-runtime"]

router = APIRouter(prefix="/v1/films", tags=["films"])


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _cache(request: Request) -> ResponseCache:
    cache: ResponseCache = request.app.state.cache
    return cache


@router.get("", response_model=FilmPage, responses=documented(401, 422))
async def films(
    _: ClaimsDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$")] = None,
    year: Annotated[int | None, Query(ge=1870, le=2100)] = None,
    genre: Annotated[str | None, Query(min_length=1, max_length=40, pattern=r"^[^\x00]*$")] = None,
    sort: Sort = "id",
) -> Response:
    async def render() -> bytes:
        async with request.app.state.sessions() as session:
            items, total = await list_films(
                session, limit=limit, offset=offset, q=q, year=year, genre=genre, sort=sort
            )
            page = FilmPage(
                items=[FilmOut.model_validate(f) for f in items],
                total=total,
                limit=limit,
                offset=offset,
            )
        return page.model_dump_json().encode()

    return _json(
        await cached(_cache(request), ("page", limit, offset, q, year, genre, sort), render)
    )


@router.get("/{film_id}", response_model=FilmOut, responses=documented(401, NOT_FOUND, 422))
async def film(_: ClaimsDep, request: Request, film_id: FilmId) -> Response:
    async def render() -> bytes:
        async with request.app.state.sessions() as session:
            return (
                FilmOut.model_validate(await get_film(session, film_id)).model_dump_json().encode()
            )

    return _json(await cached(_cache(request), ("film", film_id), render))


def _changed(request: Request) -> None:
    """This process reads its own write at once; the others within FILMS_CACHE_CHECK_SECONDS.
    Called whether or not the write got through (a clear costs only a re-read): whatever
    failed after a commit cannot leave this process serving the old answer."""
    _cache(request).clear()


@router.post("", status_code=201, response_model=FilmOut, responses=documented(400, 401, 403, 422))
async def add(body: FilmIn, _: AdminDep, session: SessionDep, request: Request) -> FilmOut:
    try:
        return FilmOut.model_validate(await create_film(session, body.model_dump()))
    finally:
        _changed(request)


@router.patch(
    "/{film_id}", response_model=FilmOut, responses=documented(400, 401, 403, NOT_FOUND, 422)
)
async def edit(
    body: FilmPatch, _: AdminDep, session: SessionDep, film_id: FilmId, request: Request
) -> FilmOut:
    changes = body.model_dump(exclude_unset=True)
    if not changes or any(value is None for value in changes.values()):
        raise ApiError(422, "invalid_request", "give at least one field, none of them null")
    try:
        return FilmOut.model_validate(await update_film(session, film_id, changes))
    finally:
        _changed(request)


@router.delete("/{film_id}", status_code=204, responses=documented(401, 403, NOT_FOUND, 422))
async def remove(_: AdminDep, session: SessionDep, film_id: FilmId, request: Request) -> Response:
    try:
        await delete_film(session, film_id)
    finally:
        _changed(request)
    return Response(status_code=204)
