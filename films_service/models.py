from __future__ import annotations

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Film(Base):
    __tablename__ = "films"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(300), index=True)
    year: Mapped[int] = mapped_column(index=True)
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    director: Mapped[str] = mapped_column(String(300))
    runtime_minutes: Mapped[int]
