"""Account self-service (Bearer): change the password, change the email address, delete the
account. Each needs the current password; see `account.py` for the rules."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from auth_service.common_passwords import is_address
from auth_service.deps import CallerDep, SelfServiceDep
from auth_service.errors import (
    AccountLocked,
    EmailTaken,
    EmailUnchanged,
    InvalidCode,
    InvalidPassword,
    RateLimited,
    TooManyCodeAttempts,
)
from auth_service.http_errors import responses
from auth_service.routes import answer_no_sooner, client_ip, limit, request_client, token_pair
from auth_service.schemas import (
    Accepted,
    DeleteAccountIn,
    EmailChangeConfirmIn,
    EmailChangeIn,
    PasswordChangeIn,
    TokenPairOut,
)

router = APIRouter(prefix="/v1/auth", tags=["account"])

EMAIL_CHANGE_ACCEPTED = Accepted(
    message="If the new address can be used, a code is on its way to it."
)
REAUTH = (InvalidPassword, AccountLocked, RateLimited, 400, 401, 422)


@router.post("/password/change", status_code=204, responses=responses(*REAUTH))
async def change_password(
    body: PasswordChangeIn, caller: CallerDep, self_service: SelfServiceDep, request: Request
) -> Response:
    """Needs the current password; ends every other session; a notice goes to the address."""
    if is_address(body.new_password, caller.user.email):  # as sign-up and reset refuse it
        error = {"loc": ("body", "new_password"), "type": "password_is_email", "msg": ""}
        raise RequestValidationError([error])
    await limit(request, "reauth", caller.user.email)
    await self_service.change_password(
        caller, body.current_password, body.new_password, body.locale, client_ip(request)
    )
    return Response(status_code=204)


@router.post(
    "/email/change",
    status_code=202,
    response_model=Accepted,
    responses=responses(EmailUnchanged, RateLimited, *REAUTH),
)
async def change_email(
    body: EmailChangeIn, caller: CallerDep, self_service: SelfServiceDep, request: Request
) -> Accepted:
    """A code goes to the new address; the same answer if another account has it (no code)."""
    await limit(request, "email_change", caller.user.email)
    async with answer_no_sooner(request):
        await self_service.request_email_change(
            caller, body.new_email, body.password, body.locale, client_ip(request)
        )
    return EMAIL_CHANGE_ACCEPTED


@router.post(
    "/email/change/confirm",
    response_model=TokenPairOut,
    responses=responses(InvalidCode, TooManyCodeAttempts, EmailTaken, RateLimited, 400, 401, 422),
)
async def confirm_email_change(
    body: EmailChangeConfirmIn, caller: CallerDep, self_service: SelfServiceDep, request: Request
) -> Response:
    """The account moves to the new address; its old one gets a notice. The pair replaces
    the caller's tokens (their session goes on)."""
    await limit(request, "email_change_confirm", caller.user.email)
    client = request_client(request)
    pair = await self_service.confirm_email_change(caller, body.code, body.locale, client)
    return token_pair(pair)


@router.delete("/me", status_code=204, responses=responses(*REAUTH))
async def delete_account(
    body: DeleteAccountIn, caller: CallerDep, self_service: SelfServiceDep, request: Request
) -> Response:
    """Removes the account and its data, and announces `user.deleted`."""
    await limit(request, "reauth", caller.user.email)
    await self_service.delete(caller, body.password, client_ip(request))
    return Response(status_code=204)
