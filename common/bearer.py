"""Bearer-token dependencies (RFC 6750): the verified claims of the request's access token.

Each app puts its verifier at `app.state.verifier`. The security scheme is declared in
OpenAPI, so Swagger's "Authorize" button works on every protected route.

An application's token (an authorization code's: it carries the application's `client_id`
and the `scope` the person allowed it, RFC 9068) is taken only by a service that names the
scope it needs, and only with that scope; a service that names none takes the person's own
tokens alone. A client's own token (the client credentials grant, `clients_own`) is an
application's token too, and speaks for no person: routes about the caller's own data
refuse it (`person_required`).

A token bound to a client's key (`cnf.jkt`, from auth's token endpoint with a DPoP proof:
common/dpop.py) comes as `Authorization: DPoP <token>` with a proof of that key for this
request (RFC 9449 §7.1), and is refused as a Bearer token: whoever copied it has no key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common import dpop
from common.errors import ApiError
from common.jwt import InvalidToken, UnknownKey, Verifier

INVALID_TOKEN_HEADERS = {"WWW-Authenticate": 'Bearer error="invalid_token"'}

Claims = dict[str, Any]

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="An RS256 access token from auth"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def use_verifier(
    app: FastAPI,
    verifier: Verifier,
    application_scope: str | None = None,
    public_url: str | None = None,
) -> None:
    """Set the verifier the bearer dependencies use (typed, so it must be a Verifier), the
    scope an application's token needs here (None: no application's token is taken), and
    where clients reach this service, which their DPoP proofs name (None: the address
    each request came to). An app whose instances share a memory of DPoP proofs puts
    it at `state.dpop_shared` (common.dpop.SharedProofs)."""
    app.state.verifier = verifier
    app.state.application_scope = application_scope
    app.state.public_url = public_url
    app.state.dpop_proofs = dpop.SeenProofs()


def invalid_token(message: str, *, as_dpop: bool = False) -> ApiError:
    if as_dpop:
        challenge = dpop.challenge("invalid_token", message)
        return ApiError(401, "invalid_token", message, {"WWW-Authenticate": challenge})
    return ApiError(401, "invalid_token", message, INVALID_TOKEN_HEADERS)


def invalid_proof(message: str) -> ApiError:
    """A DPoP proof that is missing, bad, or of another key than the token's (§7.1)."""
    challenge = dpop.challenge("invalid_dpop_proof", message)
    return ApiError(401, "invalid_dpop_proof", message, {"WWW-Authenticate": challenge})


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


def presented(request: Request) -> tuple[str, bool]:
    """The access token of the request's Authorization header ("" without one), and
    whether it came as DPoP rather than Bearer."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop"):
        return "", False
    return value.strip(), scheme == "dpop"


def resource_url(request: Request) -> str:
    """This request's URL as a DPoP proof names it (`htu`): under `state.public_url`
    where the app has one, else the address it came to; its path as sent (escapes and
    all: common/dpop.py compares them decoded), without the query."""
    base = getattr(request.app.state, "public_url", None) or str(request.base_url)
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    return base.rstrip("/") + path


async def holder_claims(request: Request, token: str, as_dpop: bool) -> Claims:
    """The verified claims of `token`, and where it is bound to a key, of a token sent as
    DPoP with a fresh proof for this request by that key (module docstring)."""
    try:
        claims = await verify_bearer(token, request.app.state.verifier)
    except ApiError as exc:
        if as_dpop:
            raise invalid_token(exc.message, as_dpop=True) from exc
        raise
    bound = claims.get("cnf")
    if not as_dpop:
        if bound is not None:
            raise invalid_token("this token is bound to a key: send it as DPoP, with a proof")
        return claims
    jkt = bound.get("jkt") if isinstance(bound, dict) else None
    if not isinstance(jkt, str):
        raise invalid_token("this token is bound to no key: send it as Bearer", as_dpop=True)
    try:  # only the token's key's proofs are remembered
        proof = dpop.checked(
            request.headers.getlist(dpop.HEADER),
            request.method,
            (resource_url(request),),
            request.app.state.dpop_proofs,
            access_token=token,
            jkt=jkt,
        )
        await dpop.new_everywhere(proof, getattr(request.app.state, "dpop_shared", None))
    except dpop.InvalidProof as exc:
        raise invalid_proof(str(exc)) from exc
    return claims


async def request_claims(request: Request, credentials: Credentials) -> Claims:
    """FastAPI dependency: the claims, verified by the app's `state.verifier` (and, for a
    token bound to a key, with its proof), of a token auth has not taken back
    (`state.revocations`, where the app keeps one), and, if an application's, granted
    `state.application_scope` (module docstring). `credentials` is OpenAPI's alone."""
    token, as_dpop = presented(request)
    if not token:
        raise invalid_token("missing bearer token")
    claims = await holder_claims(request, token, as_dpop)
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
