"""Password-less sign-in: `POST /v1/auth/login/code` emails a code, `.../verify` trades it
for a token pair. The first answers the same, no sooner than the enumeration floor, for
every address."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from auth_service.deps import CodeLoginDep
from auth_service.errors import (
    AccountDisabled,
    InvalidCode,
    MfaRequired,
    RateLimited,
    TooManyCodeAttempts,
)
from auth_service.http_errors import responses
from auth_service.routes import answer_no_sooner, client_ip, limit, proved_client, token_pair
from auth_service.schemas import Accepted, LoginCodeIn, LoginCodeVerifyIn, TokenPairOut

router = APIRouter(prefix="/v1/auth/login/code", tags=["auth"])

LOGIN_CODE_ACCEPTED = Accepted(
    message="If the address has a verified account, a sign-in code is on its way."
)


@router.post(
    "", status_code=202, response_model=Accepted, responses=responses(RateLimited, 400, 422)
)
async def request_code(body: LoginCodeIn, code_login: CodeLoginDep, request: Request) -> Accepted:
    await limit(request, "login_code", body.email)
    async with answer_no_sooner(request):
        await code_login.request(body.email, body.locale, client_ip(request))
    return LOGIN_CODE_ACCEPTED


@router.post(
    "/verify",
    response_model=TokenPairOut,
    responses=responses(
        InvalidCode, TooManyCodeAttempts, AccountDisabled, MfaRequired, RateLimited, 400, 422
    ),
)
async def verify_code(
    body: LoginCodeVerifyIn, code_login: CodeLoginDep, request: Request
) -> Response:
    await limit(request, "login_code_verify", body.email)
    client = await proved_client(request)
    async with answer_no_sooner(request, failures_only=True):
        pair = await code_login.verify(body.email, body.code, client)
    return token_pair(pair)
