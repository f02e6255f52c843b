"""The films routes' dependencies: a database session, the caller, a film id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from common.bearer import ClaimsDep


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def subject(claims: ClaimsDep) -> str:
    """The caller's user id: the access token's `sub`."""
    return str(claims["sub"])


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SubjectDep = Annotated[str, Depends(subject)]
FilmId = Annotated[int, Path(ge=1, le=2**31 - 1)]
