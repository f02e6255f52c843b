"""The admin API (Bearer, role `admin` as the database has it): find users, read one,
disable or enable them, grant or revoke roles, turn two-step sign-in off, remove their
passkeys (see `admin_users.py` for the rules); and the back-channel logout notices not yet
told, tried again once given up on (`admin_notices.py`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from auth_service.admin_users import Found
from auth_service.deps import AdminCallerDep, LogoutNoticesDep, UserAdminDep
from auth_service.errors import (
    AdminSelfLockout,
    Forbidden,
    NotListening,
    OwnTwoStep,
    UserNotFound,
)
from auth_service.http_errors import responses
from auth_service.routes import client_ip
from auth_service.schemas import (
    LogoutNoticeOut,
    LogoutNoticePage,
    RetriedOut,
    RetryIn,
    UserOut,
    UserPage,
    UserPatch,
)
from common.errors import ApiError

router = APIRouter(prefix="/v1/admin/users", tags=["admin"])
notices_router = APIRouter(prefix="/v1/admin/logout-notices", tags=["admin"])


def user_out(found: Found) -> UserOut:
    user = found.user
    return UserOut(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified,
        roles=user.roles,
        created_at=user.created_at,
        disabled=user.disabled,
        disabled_at=user.disabled_at,
        mfa=found.mfa,
        passkeys=found.passkeys,
    )


@router.get("", response_model=UserPage, responses=responses(Forbidden, 401, 422))
async def users(
    caller: AdminCallerDep,
    user_admin: UserAdminDep,
    request: Request,
    q: Annotated[str | None, Query(min_length=1, max_length=254, pattern=r"^[^\x00]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> UserPage:
    """Users whose address contains `q`, oldest first."""
    items, total = await user_admin.search(caller, q, limit, offset, client_ip(request))
    return UserPage(items=[user_out(u) for u in items], total=total, limit=limit, offset=offset)


@router.get(
    "/{user_id}", response_model=UserOut, responses=responses(Forbidden, UserNotFound, 401, 422)
)
async def user(
    user_id: uuid.UUID, caller: AdminCallerDep, user_admin: UserAdminDep, request: Request
) -> UserOut:
    return user_out(await user_admin.get(caller, user_id, client_ip(request)))


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses=responses(Forbidden, UserNotFound, AdminSelfLockout, OwnTwoStep, 400, 401, 422),
)
async def update_user(
    user_id: uuid.UUID,
    body: UserPatch,
    caller: AdminCallerDep,
    user_admin: UserAdminDep,
    request: Request,
) -> UserOut:
    """Disable (every session ends at once) or enable; `roles` replaces the role list;
    `mfa: false` turns two-step sign-in off (the owner gets a notice)."""
    changes = body.model_dump(exclude_unset=True)
    if not changes or any(value is None for value in changes.values()):
        raise ApiError(422, "invalid_request", "give disabled, roles or mfa, none of them null")
    updated = await user_admin.update(
        caller,
        user_id,
        disabled=body.disabled,
        roles=body.roles,
        mfa=body.mfa,
        ip=client_ip(request),
    )
    return user_out(updated)


@router.delete(
    "/{user_id}/passkeys",
    response_model=UserOut,
    responses=responses(Forbidden, UserNotFound, 401, 422),
)
async def remove_passkeys(
    user_id: uuid.UUID, caller: AdminCallerDep, user_admin: UserAdminDep, request: Request
) -> UserOut:
    """Every passkey of the account, for a device lost or stolen; the owner gets a notice
    (none when there were none). The sessions they opened stay: disable the account to
    end those too."""
    return user_out(await user_admin.remove_passkeys(caller, user_id, client_ip(request)))


@notices_router.get("", response_model=LogoutNoticePage, responses=responses(Forbidden, 401, 422))
async def logout_notices(
    caller: AdminCallerDep,
    notices: LogoutNoticesDep,
    request: Request,
    failed: bool | None = None,
    client_id: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> LogoutNoticePage:
    """Back-channel logout notices not yet told, oldest first: `failed=true` those given
    up on (kept a day), `false` the others; one application's with `client_id`."""
    items, total = await notices.listed(
        caller,
        failed=failed,
        client_id=client_id,
        limit=limit,
        offset=offset,
        ip=client_ip(request),
    )
    return LogoutNoticePage(
        items=[LogoutNoticeOut.model_validate(n, from_attributes=True) for n in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@notices_router.post(
    "/retry",
    response_model=RetriedOut,
    responses=responses(Forbidden, NotListening, 401, 422),
)
async def retry_logout_notices(
    caller: AdminCallerDep,
    notices: LogoutNoticesDep,
    request: Request,
    body: RetryIn | None = None,
) -> RetriedOut:
    """Try the notices given up on again, with every attempt afresh, once an application
    that was down for longer than the retries is back: that application's, or (no body,
    or no `client_id`) those of every application that listens now."""
    client_id = body.client_id if body else None
    return RetriedOut(retried=await notices.retry(caller, client_id, client_ip(request)))
