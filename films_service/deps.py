"""The films routes' dependencies: a database session, the caller, a film id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

from common.bearer import ClaimsDep, clients_own, person_required


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def subject(claims: ClaimsDep) -> str:
    """The caller's user id: the access token's `sub`; 403 for a client's own token,
    which speaks for no person."""
    if clients_own(claims):
        raise person_required()
    return str(claims["sub"])


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SubjectDep = Annotated[str, Depends(subject)]


def _digits_only(value: object) -> object:
    """Lax int parsing read "1.0" as 1 and "1_0" as 10: one film under many URLs."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("an id is written in digits only")
    return value


FilmId = Annotated[int, BeforeValidator(_digits_only), Path(ge=1, le=2**31 - 1)]
