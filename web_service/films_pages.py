"""The catalogue: the list (search, genre and year filters, sorting, pages), a film's page,
the favourite toggle and the visitor's favourites."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from web_service.api import ApiProblem
from web_service.forms import Form, whole_number
from web_service.pages import Page, SignedInDep
from web_service.security import safe_next

router = APIRouter()

PAGE_SIZE = 12
SORTS = ("title", "-title", "year", "-year", "runtime", "-runtime", "id")
# The catalogue's genres, offered as suggestions; any other genre can still be typed.
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Biography",
    "Comedy",
    "Crime",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def filters(page: Page, raw: dict[str, str]) -> tuple[Form, dict[str, Any]]:
    """The list's query as typed (to show again) and as the films API takes it."""
    form = Form({k: raw.get(k, "").strip() for k in ("q", "genre", "year", "sort")})
    params: dict[str, Any] = {}
    if q := form.value("q"):
        if len(q) > 200:
            form.errors["q"] = page.t("error.too_long")
        params["q"] = q
    if genre := form.value("genre"):
        if len(genre) > 40:
            form.errors["genre"] = page.t("error.too_long")
        params["genre"] = genre
    if year := form.value("year"):
        if (number := whole_number(year, 1870, 2100)) is None:
            form.errors["year"] = page.t("error.year")
        else:
            params["year"] = number
    sort = form.value("sort")
    params["sort"] = sort if sort in SORTS else "title"
    form.values["sort"] = params["sort"]
    return form, params


async def favourite_ids(page: Page) -> set[int]:
    films = await page.api.call("films", "GET", "/v1/me/favourites")
    return {film["id"] for film in films}


@router.get("/films")
async def films(
    page: SignedInDep,
    q: str = "",
    genre: str = "",
    year: str = "",
    sort: str = "",
    p: str = "1",
) -> Response:
    form, params = filters(page, {"q": q, "genre": genre, "year": year, "sort": sort})
    number = whole_number(p, 1, 10_000) or 1
    result: dict[str, Any] = {"items": [], "total": 0}
    if not form.errors:
        params |= {"limit": PAGE_SIZE, "offset": (number - 1) * PAGE_SIZE}
        try:
            result = await page.api.call("films", "GET", "/v1/films", params=params)
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            form.errors[""] = page.t("error.invalid_value")
    pages = max(1, math.ceil(result["total"] / PAGE_SIZE))
    query = {k: v for k, v in form.values.items() if v}
    return await page.render(
        "films.html",
        status=400 if form.errors else 200,
        form=form,
        films=result["items"],
        total=result["total"],
        number=min(number, pages),
        pages=pages,
        query=query,
        favourites=await favourite_ids(page),
        sorts=SORTS,
        genres=GENRES,
    )


@router.get("/films/{film_id}")
async def film(page: SignedInDep, film_id: int) -> Response:
    if not 0 < film_id < 2**31:
        raise ApiProblem(404, "film_not_found")
    item = await page.api.call("films", "GET", f"/v1/films/{film_id}")
    return await page.render("film.html", film=item, favourite=film_id in await favourite_ids(page))


@router.post("/films/{film_id}/favourite")
async def toggle_favourite(page: SignedInDep, film_id: int) -> Response:
    fields = await page.form()
    back = safe_next(fields.get("back"), f"/films/{film_id}")
    if not 0 < film_id < 2**31:
        raise ApiProblem(404, "film_not_found")
    add = fields.get("action") == "add"
    try:
        await page.api.call("films", "PUT" if add else "DELETE", f"/v1/me/favourites/{film_id}")
    except ApiProblem as problem:
        if problem.error != "too_many_favourites":
            raise
        page.notice("error.too_many_favourites")
    else:
        page.notice("notice.favourite_added" if add else "notice.favourite_removed")
    return await page.redirect(back)


@router.get("/favourites")
async def favourites(page: SignedInDep) -> Response:
    items = await page.api.call("films", "GET", "/v1/me/favourites")
    return await page.render("favourites.html", films=items)
