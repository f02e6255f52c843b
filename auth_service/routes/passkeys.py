"""Passkeys (`passkeys.py`): adding, listing and removing a signed-in user's, and signing
in with one. Each ceremony is two requests: options for the browser's
`navigator.credentials`, then the browser's answer."""

from __future__ import annotations

import dataclasses
import uuid

from fastapi import APIRouter, Request, Response

from auth_service.deps import CallerDep, PasskeysDep
from auth_service.errors import (
    AccountDisabled,
    InvalidPasskey,
    InvalidPassword,
    MfaSessionRequired,
    PasskeyExists,
    PasskeyNotAccepted,
    PasskeyNotFound,
    RateLimited,
    TooManyPasskeys,
)
from auth_service.http_errors import responses
from auth_service.routes import client_ip, limit, no_store, proved_client, token_pair
from auth_service.routes.account import REAUTH
from auth_service.schemas import (
    PasskeyAddIn,
    PasskeyBeginIn,
    PasskeyLoginIn,
    PasskeyOut,
    PasskeysOut,
    PublicKeyOptionsOut,
    TokenPairOut,
)

router = APIRouter(prefix="/v1/auth", tags=["passkeys"])


@router.post(
    "/passkeys/options",
    response_model=PublicKeyOptionsOut,
    responses=responses(TooManyPasskeys, MfaSessionRequired, *REAUTH),
)
async def add_options(
    body: PasskeyBeginIn, caller: CallerDep, passkeys: PasskeysDep, request: Request
) -> Response:
    """The password again, then options for `navigator.credentials.create`: answer them
    at `POST /v1/auth/passkeys` within five minutes."""
    await limit(request, "reauth", caller.user.email)
    options = await passkeys.registration_options(caller, body.password, client_ip(request))
    return no_store(PublicKeyOptionsOut(publicKey=options))


@router.post(
    "/passkeys",
    status_code=201,
    response_model=PasskeyOut,
    responses=responses(
        InvalidPasskey,
        InvalidPassword,
        MfaSessionRequired,
        PasskeyExists,
        TooManyPasskeys,
        RateLimited,
        400,
        401,
        422,
    ),
)
async def add(
    body: PasskeyAddIn, caller: CallerDep, passkeys: PasskeysDep, request: Request
) -> PasskeyOut:
    """Keeps the passkey the browser made; a notice goes to the address."""
    await limit(request, "passkey_add")
    added = await passkeys.register(
        caller, body.credential, body.name, body.locale, client_ip(request)
    )
    return PasskeyOut(**dataclasses.asdict(added))


@router.get("/passkeys", response_model=PasskeysOut, responses=responses(401))
async def listed(caller: CallerDep, passkeys: PasskeysDep) -> PasskeysOut:
    rows = await passkeys.listed(caller.user.id)
    return PasskeysOut(items=[PasskeyOut(**dataclasses.asdict(row)) for row in rows])


@router.delete(
    "/passkeys/{passkey_id}", status_code=204, responses=responses(PasskeyNotFound, 401, 422)
)
async def remove(
    passkey_id: uuid.UUID, caller: CallerDep, passkeys: PasskeysDep, request: Request
) -> Response:
    await passkeys.remove(caller, passkey_id, client_ip(request))
    return Response(status_code=204)


@router.post(
    "/login/passkey/options",
    response_model=PublicKeyOptionsOut,
    responses=responses(RateLimited),
)
async def login_options(passkeys: PasskeysDep, request: Request) -> Response:
    """Options for `navigator.credentials.get`, for any passkey of this site: answer them
    at `POST /v1/auth/login/passkey` within five minutes."""
    await limit(request, "passkey_options")
    return no_store(PublicKeyOptionsOut(publicKey=await passkeys.login_options()))


@router.post(
    "/login/passkey",
    response_model=TokenPairOut,
    responses=responses(PasskeyNotAccepted, AccountDisabled, RateLimited, 400, 422),
)
async def login(body: PasskeyLoginIn, passkeys: PasskeysDep, request: Request) -> Response:
    """A session for the passkey's account: its `amr` is `["pop", "mfa"]`."""
    await limit(request, "passkey_login")
    pair = await passkeys.login(body.credential, await proved_client(request))
    return token_pair(pair)
