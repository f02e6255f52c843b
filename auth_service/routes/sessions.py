"""The caller's sessions (Bearer): list them, end one, end all but the current one."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from auth_service.deps import CallerDep, OAuthDep, UserSessionsDep
from auth_service.errors import SessionNotFound
from auth_service.http_errors import responses
from auth_service.routes import client_ip
from auth_service.schemas import SessionOut, SessionsOut

router = APIRouter(prefix="/v1/auth/sessions", tags=["sessions"])


@router.get("", response_model=SessionsOut, responses=responses(401))
async def sessions(
    caller: CallerDep, user_sessions: UserSessionsDep, oauth: OAuthDep
) -> SessionsOut:
    """Live sessions, most recently used first; `current` marks the caller's, and
    `application` names the application an authorization code opened one for."""
    rows = await user_sessions.live(caller.user.id)
    return SessionsOut(
        items=[
            SessionOut(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                ip=row.ip,
                user_agent=row.user_agent,
                current=row.id == caller.session_id,
                client_id=row.client_id,
                application=oauth.name_of(row.client_id),
            )
            for row in rows
        ]
    )


@router.delete("/{session_id}", status_code=204, responses=responses(SessionNotFound, 401, 422))
async def end_session(
    session_id: uuid.UUID, caller: CallerDep, user_sessions: UserSessionsDep, request: Request
) -> Response:
    """Its refresh tokens are refused at once; ending the current session logs out."""
    await user_sessions.end(caller, session_id, client_ip(request))
    return Response(status_code=204)


@router.delete("", status_code=204, responses=responses(401))
async def end_other_sessions(
    caller: CallerDep, user_sessions: UserSessionsDep, request: Request
) -> Response:
    """Every session but the one this request comes from."""
    await user_sessions.end_others(caller, client_ip(request))
    return Response(status_code=204)
