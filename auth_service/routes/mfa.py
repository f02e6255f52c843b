"""Two-step sign-in (`two_step.py`): the second step of a sign-in, and turning the
authenticator app on and off for a signed-in user."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request, Response

from auth_service.deps import CallerDep, TwoStepDep
from auth_service.errors import (
    AccountDisabled,
    InvalidCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaSetupNotStarted,
    MfaUnavailable,
    RateLimited,
    TooManyCodeAttempts,
)
from auth_service.http_errors import responses
from auth_service.routes import client_ip, limit, no_store, proved_client, token_pair
from auth_service.routes.account import REAUTH
from auth_service.schemas import (
    MfaLoginIn,
    MfaStatusOut,
    RecoveryCodesOut,
    SecondStepIn,
    TokenPairOut,
    TotpBeginIn,
    TotpConfirmIn,
    TotpSetupOut,
)

router = APIRouter(prefix="/v1/auth", tags=["two-step sign-in"])

CODE_FAILURES = (InvalidCode, TooManyCodeAttempts, MfaUnavailable)


@router.post(
    "/login/mfa",
    response_model=TokenPairOut,
    responses=responses(InvalidMfaToken, AccountDisabled, RateLimited, *CODE_FAILURES, 400, 422),
)
async def login_mfa(body: MfaLoginIn, two_step: TwoStepDep, request: Request) -> Response:
    """The second step: the `mfa_token` a sign-in answered, and a code from the app (or a
    recovery code). A wrong code leaves the token usable for its other tries."""
    await limit(request, "mfa_login")
    pair = await two_step.complete(body.mfa_token, body.code, await proved_client(request))
    return token_pair(pair)


@router.get("/mfa", response_model=MfaStatusOut, responses=responses(401))
async def mfa_status(caller: CallerDep, two_step: TwoStepDep) -> MfaStatusOut:
    return MfaStatusOut(**dataclasses.asdict(await two_step.status(caller.user.id)))


@router.post(
    "/mfa/totp", response_model=TotpSetupOut, responses=responses(MfaAlreadyEnabled, *REAUTH)
)
async def begin_totp(
    body: TotpBeginIn, caller: CallerDep, two_step: TwoStepDep, request: Request
) -> Response:
    """A new secret for the app, pending until `/mfa/totp/confirm` gets its first code."""
    await limit(request, "reauth", caller.user.email)
    setup = await two_step.begin(caller, body.password, client_ip(request))
    return no_store(TotpSetupOut(**dataclasses.asdict(setup)))


@router.post(
    "/mfa/totp/confirm",
    response_model=RecoveryCodesOut,
    responses=responses(
        MfaSetupNotStarted, MfaAlreadyEnabled, RateLimited, *CODE_FAILURES, 400, 401, 422
    ),
)
async def confirm_totp(
    body: TotpConfirmIn, caller: CallerDep, two_step: TwoStepDep, request: Request
) -> Response:
    """Turns two-step sign-in on; answers the recovery codes, shown this once. A notice
    goes to the address."""
    await limit(request, "mfa_confirm", caller.user.email)
    codes = await two_step.confirm(caller, body.code, body.locale, client_ip(request))
    return no_store(RecoveryCodesOut(recovery_codes=codes))


@router.delete(
    "/mfa/totp", status_code=204, responses=responses(MfaNotEnabled, *CODE_FAILURES, *REAUTH)
)
async def disable_totp(
    body: SecondStepIn, caller: CallerDep, two_step: TwoStepDep, request: Request
) -> Response:
    """Turns two-step sign-in off: the password and a code (from the app, or a recovery one).
    A notice goes to the address."""
    await limit(request, "reauth", caller.user.email)
    await two_step.disable(caller, body.password, body.code, body.locale, client_ip(request))
    return Response(status_code=204)


@router.post(
    "/mfa/recovery-codes",
    response_model=RecoveryCodesOut,
    responses=responses(MfaNotEnabled, *CODE_FAILURES, *REAUTH),
)
async def renew_recovery_codes(
    body: SecondStepIn, caller: CallerDep, two_step: TwoStepDep, request: Request
) -> Response:
    """New recovery codes, shown this once; the old ones stop working."""
    await limit(request, "reauth", caller.user.email)
    codes = await two_step.renew_recovery_codes(
        caller, body.password, body.code, client_ip(request)
    )
    return no_store(RecoveryCodesOut(recovery_codes=codes))
