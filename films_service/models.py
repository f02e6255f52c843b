from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Film(Base):
    __tablename__ = "films"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(300), index=True)
    year: Mapped[int] = mapped_column(index=True)
    director: Mapped[str] = mapped_column(String(300))
    runtime_minutes: Mapped[int]
    genre_rows: Mapped[list[FilmGenre]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="FilmGenre.position"
    )

    @property
    def genres(self) -> list[str]:
        return [row.name for row in self.genre_rows]

    @genres.setter
    def genres(self, names: list[str]) -> None:
        self.genre_rows = [FilmGenre(name=name, position=i) for i, name in enumerate(names)]


class FilmGenre(Base):
    """One row per (film, genre): filtering by genre is an indexed join on any database."""

    __tablename__ = "film_genres"

    film_id: Mapped[int] = mapped_column(
        ForeignKey("films.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(default=0)


class Favourite(Base):
    """A user's favourite film, keyed by the token's `sub`: films keeps no account table."""

    __tablename__ = "favourites"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    film_id: Mapped[int] = mapped_column(
        ForeignKey("films.id", ondelete="CASCADE"), primary_key=True
    )
    film: Mapped[Film] = relationship(lazy="selectin")


class CatalogueVersion(Base):
    """One row whose number every catalogue write raises: how each process learns that
    its cached responses are stale (films_service.cache)."""

    __tablename__ = "catalogue_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, default=0)
