"""Bearer-token dependencies (RFC 6750): the verified claims of the request's access token.

Each app puts its verifier at `app.state.verifier`. The security scheme is declared in
OpenAPI, so Swagger's "Authorize" button works on every protected route.

An application's token (an authorization code's: it carries the application's `client_id`
and the `scope` the person allowed it, RFC 9068) is taken only by a service that names the
scope it needs, and only with that scope; a service that names none takes the person's own
tokens alone. A client's own token (the client credentials grant, `clients_own`) is an
application's token too, and speaks for no person: routes about the caller's own data
refuse it (`person_required`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.errors import ApiError
from common.jwt import InvalidToken, UnknownKey, Verifier

INVALID_TOKEN_HEADERS = {"WWW-Authenticate": 'Bearer error="invalid_token"'}

Claims = dict[str, Any]

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="An RS256 access token from auth"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def use_verifier(app: FastAPI, verifier: Verifier, application_scope: str | None = None) -> None:
    """Set the verifier the bearer dependencies use (typed, so it must be a Verifier), and
    the scope an application's token needs here (None: no application's token is taken)."""
    app.state.verifier = verifier
    app.state.application_scope = application_scope


def invalid_token(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, INVALID_TOKEN_HEADERS)


def insufficient_scope(needed: str | None) -> ApiError:
    """An application's token without the scope this service needs (RFC 6750 §3.1)."""
    if needed is None:
        challenge, message = (
            'Bearer error="insufficient_scope"',
            "this takes no application's token",
        )
    else:
        challenge = f'Bearer error="insufficient_scope", scope="{needed}"'
        message = f"an application's token needs the {needed} scope here"
    return ApiError(403, "insufficient_scope", message, {"WWW-Authenticate": challenge})


def clients_own(claims: Claims) -> bool:
    """Whether the token is a client's own (the client credentials grant: `sub` is its
    client_id, and no session holds it), speaking for no person."""
    return (
        "client_id" in claims and claims["client_id"] == claims.get("sub") and ("sid" not in claims)
    )


def person_required() -> ApiError:
    return ApiError(403, "forbidden", "this needs a person's token, not a client's own")


def check_application(claims: Claims, needed: str | None) -> None:
    """Nothing for the person's own token; for an application's, that it was granted
    `needed` (None: refused)."""
    if "client_id" not in claims:
        return
    scope = claims.get("scope")
    if needed is None or not isinstance(scope, str) or needed not in scope.split():
        raise insufficient_scope(needed)


async def verify_bearer(token: str, verifier: Verifier) -> Claims:
    """The token's verified claims, or a 401 per RFC 6750."""
    try:
        try:
            return verifier.verify(token)
        except UnknownKey:
            # A verifier that can learn keys (JWKS) gets one chance, rate-limited by itself.
            if not await verifier.refresh_unknown():
                raise
            return verifier.verify(token)
    except InvalidToken as exc:
        raise invalid_token("invalid bearer token") from exc


async def request_claims(request: Request, credentials: Credentials) -> Claims:
    """FastAPI dependency: the claims, verified by the app's `state.verifier`, of a token
    auth has not taken back (`state.revocations`, where the app keeps one), and, if an
    application's, granted `state.application_scope` (module docstring)."""
    token = credentials.credentials.strip() if credentials else ""
    if not token:
        raise invalid_token("missing bearer token")
    claims = await verify_bearer(token, request.app.state.verifier)
    revocations = getattr(request.app.state, "revocations", None)
    if revocations is not None and revocations.revoked(claims):
        raise invalid_token(
            "token taken back: its session ended, its account was disabled or deleted, or "
            "its password changed"
        )
    check_application(claims, getattr(request.app.state, "application_scope", None))
    return claims


ClaimsDep = Annotated[Claims, Depends(request_claims)]


MFA_SESSION_REQUIRED = "this needs a session signed in with two-step sign-in"


def passed_two_steps(claims: Claims) -> bool:
    """Whether the token's session passed two-step sign-in (RFC 8176 `amr` has "mfa")."""
    amr = claims.get("amr")
    return isinstance(amr, list) and "mfa" in amr


async def admin_claims(request: Request, claims: ClaimsDep) -> Claims:
    """FastAPI dependency: the claims of a token carrying the `admin` role, else 403; and,
    where the app requires it (`state.admin_requires_mfa`), of a session that passed
    two-step sign-in."""
    roles = claims.get("roles")
    if not isinstance(roles, list) or "admin" not in roles:
        raise ApiError(403, "forbidden", "this needs the admin role")
    if getattr(request.app.state, "admin_requires_mfa", False) and not passed_two_steps(claims):
        raise ApiError(403, "mfa_session_required", MFA_SESSION_REQUIRED)
    return claims


AdminDep = Annotated[Claims, Depends(admin_claims)]
