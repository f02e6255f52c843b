"""The HTTP face of the account rules' failures: each domain error's status, stable
`error` code and message, and the `responses=` that document them in OpenAPI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from auth_service.errors import (
    AccountDisabled,
    AccountLocked,
    AdminSelfLockout,
    ApplicationSession,
    AuthError,
    ConsentNotFound,
    ConsentRequired,
    EmailNotVerified,
    EmailTaken,
    EmailUnchanged,
    Forbidden,
    InvalidCode,
    InvalidCredentials,
    InvalidGrant,
    InvalidMfaToken,
    InvalidPasskey,
    InvalidPassword,
    InvalidRequestUri,
    KeyBoundGrant,
    LogoutRefused,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaRequired,
    MfaSessionRequired,
    MfaSetupNotStarted,
    MfaUnavailable,
    NotAuthenticated,
    NotListening,
    OwnTwoStep,
    PasskeyExists,
    PasskeyNotAccepted,
    PasskeyNotFound,
    PushedRequestRequired,
    RateLimited,
    RetryLater,
    SessionNotFound,
    SignInTooOld,
    TooManyCodeAttempts,
    TooManyPasskeys,
    UnknownClient,
    UserNotFound,
)
from common.bearer import INVALID_TOKEN_HEADERS, MFA_SESSION_REQUIRED
from common.errors import documented, error_response


@dataclass(frozen=True)
class Problem:
    status: int
    error: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


PROBLEMS: dict[type[AuthError], Problem] = {
    InvalidCode: Problem(400, "invalid_code", "the code is wrong, expired or already used"),
    InvalidCredentials: Problem(401, "invalid_credentials", "email or password is wrong"),
    EmailNotVerified: Problem(403, "email_not_verified", "verify the email address first"),
    KeyBoundGrant: Problem(
        401,
        "invalid_grant",
        "the refresh token is bound to a key: refresh it at /v1/auth/token with a DPoP proof",
        INVALID_TOKEN_HEADERS,
    ),
    InvalidGrant: Problem(
        401,
        "invalid_grant",
        "the refresh token is invalid, expired or revoked",
        INVALID_TOKEN_HEADERS,
    ),
    AccountDisabled: Problem(403, "account_disabled", "the account is disabled"),
    InvalidPassword: Problem(400, "invalid_password", "the current password is wrong"),
    NotAuthenticated: Problem(
        401,
        "invalid_token",
        "the token's account no longer exists or is disabled, or its session ended",
        INVALID_TOKEN_HEADERS,
    ),
    Forbidden: Problem(403, "forbidden", "this needs the admin role"),
    EmailTaken: Problem(409, "email_taken", "another account has that address now"),
    EmailUnchanged: Problem(400, "email_unchanged", "that is the account's address already"),
    SessionNotFound: Problem(404, "session_not_found", "you have no session with that id"),
    UserNotFound: Problem(404, "user_not_found", "no account has that id"),
    NotListening: Problem(
        404,
        "client_not_listening",
        "no configured application of that id has a back-channel logout URI",
    ),
    AdminSelfLockout: Problem(
        409,
        "admin_self_lockout",
        "you cannot disable your own account or remove your own admin role",
    ),
    MfaRequired: Problem(
        403,
        "mfa_required",
        "the account has two-step sign-in: send mfa_token and a code to /v1/auth/login/mfa",
    ),
    InvalidMfaToken: Problem(
        401, "invalid_mfa_token", "the mfa_token is expired, used or unknown; sign in again"
    ),
    MfaAlreadyEnabled: Problem(
        409, "mfa_already_enabled", "two-step sign-in is on already; turn it off first"
    ),
    MfaSetupNotStarted: Problem(
        409, "mfa_setup_not_started", "start setting up the authenticator app first"
    ),
    MfaNotEnabled: Problem(409, "mfa_not_enabled", "two-step sign-in is not on"),
    MfaUnavailable: Problem(
        503,
        "mfa_unavailable",
        "the authenticator app cannot be checked now; ask an administrator to turn two-step "
        "sign-in off, then set it up again",
    ),
    MfaSessionRequired: Problem(403, "mfa_session_required", MFA_SESSION_REQUIRED),
    OwnTwoStep: Problem(
        409,
        "own_two_step",
        "turn your own two-step sign-in off in your account, with your password and a code",
    ),
    InvalidPasskey: Problem(
        400,
        "invalid_passkey",
        "the passkey's answer did not check out for this site and challenge; "
        "ask for new options and try again",
    ),
    PasskeyNotAccepted: Problem(
        401,
        "passkey_not_accepted",
        "the passkey was not recognised, or its challenge expired or was used; "
        "ask for new options and try again",
    ),
    PasskeyExists: Problem(409, "passkey_exists", "that passkey is registered already"),
    ApplicationSession: Problem(
        403,
        "application_session",
        "an application's session reads userinfo here, and nothing else of the account",
    ),
    SignInTooOld: Problem(
        403, "login_required", "the sign-in is older than max_age allows: sign in again"
    ),
    ConsentRequired: Problem(
        403, "consent_required", "the person has not allowed this application all it asks for"
    ),
    ConsentNotFound: Problem(404, "consent_not_found", "you allowed no application by that id"),
    LogoutRefused: Problem(
        400,
        "invalid_logout_request",
        "the id_token_hint is not ours, or it, client_id and post_logout_redirect_uri do not "
        "name one application and an address it registered",
    ),
    UnknownClient: Problem(
        400,
        "invalid_client",
        "no application has that client_id, or it registered no such redirect_uri",
    ),
    InvalidRequestUri: Problem(
        400,
        "invalid_request_uri",
        "the request_uri is unknown or expired, was used already, or is another client's",
    ),
    PushedRequestRequired: Problem(
        400,
        "invalid_request",
        "this application pushes its authorization requests (RFC 9126): send its request_uri",
    ),
    TooManyPasskeys: Problem(
        409, "too_many_passkeys", "the account has as many passkeys as it may; remove one first"
    ),
    PasskeyNotFound: Problem(404, "passkey_not_found", "you have no passkey with that id"),
    RateLimited: Problem(429, "rate_limited", "too many requests, try again later"),
    AccountLocked: Problem(
        429, "account_locked", "too many failed logins for this address; try again later"
    ),
    TooManyCodeAttempts: Problem(
        429, "too_many_code_attempts", "too many wrong codes for this address; try again later"
    ),
}


def problem_for(exc: AuthError) -> Problem:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    raise LookupError(f"no HTTP answer defined for {type(exc).__name__}")


def answer(exc: AuthError) -> JSONResponse:
    problem = problem_for(exc)
    headers = dict(problem.headers)
    extra: dict[str, object] = {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, InvalidCode) and exc.tries_left is not None:
        extra = {"tries_left": exc.tries_left}
    if isinstance(exc, MfaRequired):
        headers["Cache-Control"] = "no-store"
        extra = {"mfa_token": exc.token, "expires_in": exc.expires_in}
    return error_response(problem.status, problem.error, problem.message, headers or None, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        return answer(exc)


def responses(*failures: type[AuthError] | int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its domain failures, plus generic statuses (422, 401…)."""
    return documented(
        *(f if isinstance(f, int) else (PROBLEMS[f].status, PROBLEMS[f].error) for f in failures)
    )
