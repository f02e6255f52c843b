from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
