from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from common.schemas import NoNul, StrictModel

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), NoNul]
Genre = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40), NoNul]
Year = Annotated[int, Field(ge=1870, le=2100)]
Runtime = Annotated[int, Field(ge=1, le=1000)]


def _distinct(genres: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for genre in genres:
        seen.setdefault(genre.lower(), genre)
    return list(seen.values())


Genres = Annotated[list[Genre], Field(min_length=1, max_length=10), AfterValidator(_distinct)]


class FilmOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    year: int
    genres: list[str]
    director: str
    runtime_minutes: int


class FilmPage(BaseModel):
    items: list[FilmOut]
    total: int
    limit: int
    offset: int


class FilmIn(StrictModel):
    title: Text
    year: Year
    genres: Genres
    director: Text
    runtime_minutes: Runtime


class FilmPatch(StrictModel):
    title: Text | None = None
    year: Year | None = None
    genres: Genres | None = None
    director: Text | None = None
    runtime_minutes: Runtime | None = None
