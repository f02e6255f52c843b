"""The auth routes: sign-up, verification, login, refresh, logout, password reset, `me`
and the JWKS; and the edge helpers every auth route module uses (client address, rate
limits, the response floor). The other resources have a module each in this package."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from auth_service.deps import AccountsDep, CallerDep, RefreshTokensDep, user_agent
from auth_service.errors import (
    AccountDisabled,
    AccountLocked,
    ApplicationSession,
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    InvalidGrant,
    MfaRequired,
    RateLimited,
    TooManyCodeAttempts,
)
from auth_service.floors import AnswerFloor
from auth_service.http_errors import responses
from auth_service.ratelimit import RateLimiter, ip_key
from auth_service.schemas import (
    Accepted,
    ForgotIn,
    LoginIn,
    MeOut,
    RefreshIn,
    ResendIn,
    ResetIn,
    SignupIn,
    TokenPairOut,
    VerifyIn,
)
from auth_service.tokens import TokenPair
from auth_service.user_sessions import Client
from common import dpop
from common.bearer import resource_url
from common.errors import ApiError

router = APIRouter(prefix="/v1/auth", tags=["auth"])

# One answer whatever the address's state, so the endpoint cannot be used to find accounts.
SIGNUP_ACCEPTED = Accepted(message="If the address can be registered, a code is on its way.")
RESEND_ACCEPTED = Accepted(message="If the address awaits verification, a new code is on its way.")
FORGOT_ACCEPTED = Accepted(message="If the address has an account, a reset code is on its way.")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def request_client(request: Request) -> Client:
    """Who is asking, as a session records it: the address and the User-Agent."""
    return Client(client_ip(request), user_agent(request))


async def taken_proof(request: Request, sent: list[str]) -> dpop.Proof:
    """The DPoP proof `sent` (the request's `DPoP` headers), checked against this request
    and new to the endpoints that issue tokens, which keep their own memory in each
    process (`state.dpop_grants`), and to every instance where they share one
    (`state.dpop_shared`); InvalidProof otherwise."""
    proof = dpop.checked(
        sent, request.method, (resource_url(request),), request.app.state.dpop_grants
    )
    await dpop.new_everywhere(proof, request.app.state.dpop_shared)
    return proof


async def proved_client(request: Request) -> Client:
    """`request_client`, and where the request sends a DPoP proof (RFC 9449), its key:
    the tokens it gets are bound to it, and a new session's refresh tokens too (no
    confidential client proves itself at the JSON endpoints). Counted (`ip:dpop`) before
    checked, as at the token endpoint; a bad proof is 400 invalid_dpop_proof."""
    client = request_client(request)
    sent = request.headers.getlist(dpop.HEADER)
    if not sent:
        return client
    await limit(request, "dpop")
    try:
        proof = await taken_proof(request, sent)
    except dpop.InvalidProof as exc:
        raise ApiError(400, "invalid_dpop_proof", str(exc)) from exc
    return dataclasses.replace(client, dpop_jkt=proof.jkt, binds_session=True)


async def limit(request: Request, action: str, account: str | None = None) -> None:
    limiter: RateLimiter = request.app.state.limiter
    limits = request.app.state.limits
    await limiter.hit(f"ip:{action}", ip_key(client_ip(request)), limits["ip"][action])
    if account is not None:
        await limit_account(request, action, account)


async def limit_account(request: Request, action: str, account: str) -> None:
    limiter: RateLimiter = request.app.state.limiter
    limits = request.app.state.limits
    if action in limits["account"]:
        await limiter.hit(f"account:{action}", account, limits["account"][action])


async def limit_failures(request: Request, action: str, key: str, *, failed: bool) -> None:
    """A budget of failures per client address and `key` (what the attempt names): checked
    before each attempt, spent by each failure (`failed`). RateLimited once spent."""
    limiter: RateLimiter = request.app.state.limiter
    limits = request.app.state.limits
    counted = f"{ip_key(client_ip(request))} {key}"
    if failed:
        await limiter.hit(f"ip:{action}", counted, limits["ip"][action])
    else:
        await limiter.check(f"ip:{action}", counted, limits["ip"][action])


async def limit_client(request: Request, action: str, client_id: str) -> None:
    """Count one request of an OAuth client that proved itself."""
    limiter: RateLimiter = request.app.state.limiter
    limits = request.app.state.limits
    await limiter.hit(f"client:{action}", client_id, limits["client"][action])


# RFC 6749 §5.1: an answer holding tokens is not kept by any cache along the way.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def no_store(body: BaseModel) -> Response:
    """An answer holding tokens or secrets: no cache along the way may keep it."""
    return Response(body.model_dump_json(), media_type="application/json", headers=NO_STORE)


def token_pair(pair: TokenPair) -> Response:
    return no_store(TokenPairOut(**dataclasses.asdict(pair)))


@dataclasses.dataclass
class Padding:
    floor: AnswerFloor
    started: float

    def outlasted_by(self, work: asyncio.Task[Any]) -> None:
        """`work`, set going by this answer, may end after it: the route's floor rises to
        its end as well (`AnswerFloor.record`)."""
        work.add_done_callback(lambda _: self.floor.record(time.perf_counter() - self.started))


@asynccontextmanager
async def answer_no_sooner(
    request: Request, *, failures_only: bool = False
) -> AsyncIterator[Padding]:
    """Pad the response to the route's floor (`auth_service/floors.py`), so no branch is
    measurably faster than another. With `failures_only`, an answer that succeeds is not
    held back: a right code says nothing its sender did not know."""
    floor = request.app.state.answer_floors[request.scope["route"].path]
    padding = Padding(floor, time.perf_counter())

    async def pad() -> None:
        await asyncio.sleep(floor.hold(time.perf_counter() - padding.started))

    try:
        yield padding
    except Exception:
        await pad()
        raise
    if not failures_only:
        await pad()


@router.post(
    "/signup", status_code=202, response_model=Accepted, responses=responses(RateLimited, 400, 422)
)
async def signup(body: SignupIn, accounts: AccountsDep, request: Request) -> Accepted:
    await limit(request, "signup")  # per IP
    over: RateLimited | None = None
    try:
        await limit_account(request, "signup", body.email)
    except RateLimited as exc:
        # Nothing more is sent to the address, but a different password still disputes
        # the pending one: else a stranger could spend its budget with theirs, and the
        # owner's sign-up would never be compared.
        over = exc
    async with answer_no_sooner(request) as padding:
        # The answer waits for the accepted sign-up's row, not for what the address's
        # state makes of it: that runs beside the padding, after the same work for all.
        ip = client_ip(request)
        accepted = await accounts.accept_signup(
            body.email, body.password, body.locale, ip, send=over is None
        )
        padding.outlasted_by(accounts.finish_soon(accepted, body.password))
    if over is not None:
        raise over
    return SIGNUP_ACCEPTED


@router.post(
    "/verify",
    response_model=TokenPairOut,
    responses=responses(InvalidCode, TooManyCodeAttempts, AccountDisabled, RateLimited, 400, 422),
)
async def verify(body: VerifyIn, accounts: AccountsDep, request: Request) -> Response:
    await limit(request, "verify", body.email)
    client = await proved_client(request)
    async with answer_no_sooner(request, failures_only=True):  # a known address is slower
        pair = await accounts.verify_email(body.email, body.code, client)
    return token_pair(pair)


@router.post(
    "/verify/resend",
    status_code=202,
    response_model=Accepted,
    responses=responses(RateLimited, 400, 422),
)
async def resend(body: ResendIn, accounts: AccountsDep, request: Request) -> Accepted:
    await limit(request, "resend", body.email)
    async with answer_no_sooner(request):
        await accounts.resend_verification(body.email, body.locale)
    return RESEND_ACCEPTED


@router.post(
    "/login",
    response_model=TokenPairOut,
    responses=responses(
        InvalidCredentials,
        EmailNotVerified,
        AccountDisabled,
        AccountLocked,
        MfaRequired,
        RateLimited,
        400,
        422,
    ),
)
async def login(body: LoginIn, accounts: AccountsDep, request: Request) -> Response:
    await limit(request, "login", body.email)
    client = await proved_client(request)
    pair = await accounts.login(body.email, body.password, client)
    return token_pair(pair)


@router.post(
    "/token/refresh",
    response_model=TokenPairOut,
    responses=responses(InvalidGrant, RateLimited, 400, 422),
)
async def refresh(body: RefreshIn, tokens: RefreshTokensDep, request: Request) -> Response:
    await limit(request, "refresh")
    pair = await tokens.rotate(body.refresh_token, await proved_client(request))
    return token_pair(pair)


@router.post("/logout", status_code=204, responses=responses(400, 422))
async def logout(body: RefreshIn, tokens: RefreshTokensDep, request: Request) -> Response:
    # Same answer for unknown tokens: logout is idempotent and reveals nothing.
    # (A confidential client's token is not ended here: that client revokes it, with its
    # secret, at /v1/auth/revoke.)
    await tokens.revoke(None, client_ip(request), refresh_token=body.refresh_token)
    return Response(status_code=204)


@router.post(
    "/password/forgot",
    status_code=202,
    response_model=Accepted,
    responses=responses(RateLimited, 400, 422),
)
async def forgot(body: ForgotIn, accounts: AccountsDep, request: Request) -> Accepted:
    await limit(request, "forgot", body.email)
    async with answer_no_sooner(request):
        await accounts.forgot_password(body.email, body.locale, client_ip(request))
    return FORGOT_ACCEPTED


@router.post(
    "/password/reset",
    status_code=204,
    responses=responses(InvalidCode, TooManyCodeAttempts, RateLimited, 400, 422),
)
async def reset(body: ResetIn, accounts: AccountsDep, request: Request) -> Response:
    await limit(request, "reset", body.email)
    async with answer_no_sooner(request, failures_only=True):
        await accounts.reset_password(body.email, body.code, body.new_password, client_ip(request))
    return Response(status_code=204)


@router.get("/me", response_model=MeOut, responses=responses(ApplicationSession, 401))
async def me(caller: CallerDep) -> MeOut:
    user = caller.user
    return MeOut(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified,
        roles=user.roles,
        created_at=user.created_at,
    )


wellknown = APIRouter(tags=["keys"])


@wellknown.get("/.well-known/jwks.json")
async def jwks(request: Request) -> JSONResponse:
    keys = request.app.state.keys
    keys.refresh()
    return JSONResponse(
        {"keys": keys.jwks},
        headers={"Cache-Control": "public, max-age=300"},
    )
