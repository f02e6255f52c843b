"""`POST /v1/auth/token`: the OAuth 2.0 token endpoint (RFC 6749).

`grant_type=password` (§4.3, the email as `username`) follows the JSON login's rules: the
same rate limits, lockout and audit trail. `grant_type=refresh_token` (§6) rotates as
`/v1/auth/token/refresh` does. `grant_type=authorization_code` (§4.1.3, with RFC 7636's
`code_verifier`) trades a code from the authorization endpoint (`oauth.py`): the client
names itself with `client_id`, and a confidential one proves it with its secret, in HTTP
Basic (§2.3.1) or as `client_secret`, or with an assertion signed with its private key
(`private_key_jwt`: `client_assertion_type` and `client_assertion`, RFC 7523 §2.2,
client_assertions.py). A request with a DPoP proof (RFC 9449, common/dpop.py) gets an
access token bound to the proof's key (`token_type` DPoP), and, where no confidential
client proved itself, a session whose refresh tokens only that key's proofs refresh; a
bad proof is 400 `invalid_dpop_proof`. A code bound to a key (RFC 9449 §10: pushed with a
proof, or asked for with `dpop_jkt`) is redeemed only with a proof by it. Success is §5.1
(`Cache-Control: no-store`), with an `id_token` where `openid` was granted; failures are
§5.2, `{"error", "error_description"}`: `invalid_request` for a malformed or incomplete form,
`unsupported_grant_type`, `invalid_client` (401) for a client that is unknown or gave a
wrong secret or an assertion that is not taken, and `invalid_grant` for anything wrong
with the credentials, the refresh token or the code (which includes unverified, disabled
and locked accounts). Past a rate limit the answer stays 429 with `Retry-After`. The
password grant ignores a `client_id`, and so does the refresh grant unless it names an
application in AUTH_OAUTH_CLIENTS: then the client must prove itself, and gets only its
own sessions refreshed. A confidential client's session is refreshed by that client alone
(RFC 6749 §6).
`grant_type=client_credentials` (§4.4) gives a confidential client registered for it an
access token of its own, and no refresh token: `unauthorized_client` for a client that
may not use it, `invalid_scope` where nothing asked for may be granted to it. Wherever a
client's secret or assertion is checked, wrong ones spend a budget (`_client`).

`POST /v1/auth/revoke` is RFC 7009's revocation endpoint, with the same client
authentication: a token's session ends (`revoke`). `POST /v1/auth/introspect` is RFC
7662's introspection endpoint, for confidential clients only: whether a token is live now,
which auth knows at once (`introspect`). `POST /v1/auth/par` is RFC 9126's pushed
authorization request endpoint, with the same client authentication again: an
authorization request kept for the browser to name by its request_uri (`par`,
pushed.py).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Annotated, Any, Literal
from urllib.parse import unquote_plus

from fastapi import APIRouter, Form, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from auth_service.client_assertions import ASSERTION_TYPE, MalformedAssertion, asserted_client
from auth_service.config import OAuthClient
from auth_service.deps import (
    PAR_URL,
    TOKEN_URL,
    AccountsDep,
    OAuthDep,
    RefreshTokensDep,
    UserSessionsDep,
)
from auth_service.errors import (
    AccountDisabled,
    AccountLocked,
    AuthError,
    ClientRefused,
    EmailNotVerified,
    InvalidCodeGrant,
    InvalidCredentials,
    InvalidGrant,
    KeyBoundCode,
    KeyBoundGrant,
    MfaRequired,
    NoScope,
    NotAuthenticated,
    RetryLater,
)
from auth_service.http_errors import problem_for
from auth_service.oauth import covers, registered, service_scopes
from auth_service.pushed import KEPT
from auth_service.routes import (
    NO_STORE,
    client_ip,
    limit,
    limit_client,
    limit_failures,
    request_client,
    taken_proof,
)
from auth_service.tokens import TokenPair
from auth_service.user_sessions import Client
from common import dpop
from common.authorization import refusal
from common.bearer import clients_own
from common.jwt import InvalidToken
from common.schemas import Email

FORM = "application/x-www-form-urlencoded"

# What each refusal of the account rules says, as RFC 6749's invalid_grant.
GRANT_REFUSALS: dict[type[AuthError], str] = {
    InvalidCredentials: "the username or password is wrong",
    EmailNotVerified: "verify the email address first",
    AccountDisabled: "the account is disabled",
    AccountLocked: "too many failed logins for this address; try again later",
    InvalidCodeGrant: "the code is unknown, expired or used, or was given to another client "
    "or redirect_uri, or the code_verifier does not match it",
    KeyBoundCode: "the code is bound to a key: send a DPoP proof signed by it",
    KeyBoundGrant: "the refresh token is bound to a key: send a DPoP proof signed by it",
    InvalidGrant: "the refresh token is invalid, expired or revoked",
}
_email = TypeAdapter(Email)


class OAuthErrorOut(BaseModel):
    """RFC 6749 §5.2."""

    error: str
    error_description: str


class OAuthTokenOut(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: Literal["Bearer", "DPoP"] = "Bearer"  # DPoP: bound to the proof's key
    expires_in: int
    refresh_token: str | None = None  # not for a client's own token (§4.4.3)
    id_token: str | None = None  # the authorization code grant, `openid` granted
    # The authorization code and client credentials grants: what was granted.
    scope: str | None = None


class ClientForm(BaseModel):
    """A client's own name and secret, where it does not send them in HTTP Basic, or the
    assertion it signed (private_key_jwt), which names it."""

    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=256)
    client_assertion_type: str | None = Field(
        default=None, max_length=128, description=f"private_key_jwt: {ASSERTION_TYPE}"
    )
    client_assertion: str | None = Field(
        default=None, max_length=8192, description="private_key_jwt: a JWT the client signed"
    )


class TokenForm(ClientForm):
    grant_type: str | None = Field(default=None, max_length=64)
    username: str | None = Field(default=None, max_length=1024, description="the email")
    password: str | None = Field(default=None, max_length=1024)
    refresh_token: str | None = Field(default=None, max_length=256)
    code: str | None = Field(default=None, max_length=256)
    redirect_uri: str | None = Field(default=None, max_length=2000)
    code_verifier: str | None = Field(default=None, max_length=128)
    scope: str | None = Field(
        default=None, max_length=1024, description="client_credentials: the scopes asked for"
    )


class RevokeForm(ClientForm):
    """RFC 7009 §2.1."""

    token: str | None = Field(default=None, max_length=8192)
    token_type_hint: str | None = Field(
        default=None, max_length=64, description="access_token or refresh_token; a hint only"
    )


class IntrospectForm(ClientForm):
    """RFC 7662 §2.1."""

    token: str | None = Field(default=None, max_length=8192)
    token_type_hint: str | None = Field(
        default=None, max_length=64, description="access_token or refresh_token; a hint only"
    )


class PushedForm(ClientForm):
    """RFC 9126 §2.1: an authorization request's parameters, as the authorization
    endpoint takes them (common/authorization.py), beside the client's proof."""

    response_type: str | None = Field(default=None, max_length=64)
    redirect_uri: str | None = Field(default=None, max_length=2000)
    code_challenge: str | None = Field(default=None, max_length=128)
    code_challenge_method: str | None = Field(default=None, max_length=16)
    scope: str | None = Field(default=None, max_length=1024)
    state: str | None = Field(default=None, max_length=2000)
    nonce: str | None = Field(default=None, max_length=512)
    prompt: str | None = Field(default=None, max_length=32)
    max_age: str | None = Field(default=None, max_length=16)
    login_hint: str | None = Field(default=None, max_length=254)
    dpop_jkt: str | None = Field(default=None, max_length=64)  # RFC 9449 §10
    # Refused: §2.1 (a request_uri is what is given back), and request objects (RFC
    # 9101) are not taken.
    request_uri: str | None = Field(default=None, max_length=2000)
    request: str | None = Field(default=None, max_length=8192)


class PushedOut(BaseModel):
    """RFC 9126 §2.2."""

    request_uri: str
    expires_in: int


class IntrospectionOut(BaseModel):
    """RFC 7662 §2.2: `active`, and of an active token what it is (members that do not
    apply left out): an access token's claims, with the account's roles as they are now,
    and `token_type` Bearer (DPoP, with `cnf`, for one bound to a key: RFC 9449 §6.2); a
    refresh token's client, scope, holder, session and life."""

    active: bool
    token_type: Literal["Bearer", "DPoP"] | None = None
    client_id: str | None = None  # the application it was issued to
    scope: str | None = None  # what was granted to that application
    sub: str | None = None
    iss: str | None = None
    aud: str | list[str] | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    sid: str | None = None  # its session, as in the ID token and logout tokens
    roles: list[str] | None = None
    amr: list[str] | None = None
    cnf: dict[str, str] | None = None


INACTIVE = IntrospectionOut(active=False)


def oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status, headers={**NO_STORE, **(headers or {})})


class OAuthFormRoute(APIRoute):
    """Answers what FastAPI would refuse with 422 (or 400 for an unreadable body) as RFC
    6749's invalid_request, and insists on a form-encoded body (§3.2)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def form_only(request: Request) -> Response:
            content_type = request.headers.get("content-type", "").partition(";")[0]
            if content_type.strip().lower() != FORM:
                return oauth_error(400, "invalid_request", f"send the parameters as {FORM}")
            try:
                return await handler(request)
            except RequestValidationError:
                return oauth_error(400, "invalid_request", "a parameter is malformed or too long")
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                return oauth_error(400, "invalid_request", "the form could not be read")

        return form_only


router = APIRouter(prefix="/v1/auth", tags=["oauth2"], route_class=OAuthFormRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthErrorOut,
        "description": "`error`: invalid_request, invalid_grant, unsupported_grant_type, "
        "unauthorized_client, invalid_scope or invalid_dpop_proof",
    },
    401: {"model": OAuthErrorOut, "description": "`error`: invalid_client"},
    403: {
        "model": OAuthErrorOut,
        "description": "`error`: mfa_required, with `mfa_token` and `expires_in`",
    },
    429: {"model": OAuthErrorOut, "description": "`error`: rate_limited (with Retry-After)"},
}


@router.post(TOKEN_URL.removeprefix("/v1/auth"), response_model=OAuthTokenOut, responses=ERRORS)
async def token(
    form: Annotated[TokenForm, Form()],
    request: Request,
    accounts: AccountsDep,
    tokens: RefreshTokensDep,
    oauth: OAuthDep,
) -> Response:
    """Tokens for a code, an email and password, or a refresh token (RFC 6749 §4.1.3,
    §4.3, §6); a client's own access token (§4.4)."""
    if await _repeated(request, TokenForm):
        return oauth_error(400, "invalid_request", "a parameter was sent more than once")
    try:
        proof = await _proof(request)
        if isinstance(proof, JSONResponse):
            return proof
        jkt = proof.jkt if proof else None
        # Bound to the key: the access token, and the session of whoever proved no secret.
        client = replace(request_client(request), dpop_jkt=jkt, binds_session=jkt is not None)
        if form.grant_type == "authorization_code":
            return await _code_grant(request, form, oauth, client)
        if form.grant_type == "client_credentials":
            return await _client_credentials(request, form, oauth, jkt)
        if form.grant_type == "password":
            if not form.username or not form.password:
                return oauth_error(400, "invalid_request", "username and password are required")
            pair = await _password_grant(request, accounts, form.username, form.password, client)
        elif form.grant_type == "refresh_token":
            if not form.refresh_token:
                return oauth_error(400, "invalid_request", "refresh_token is required")
            await limit(request, "refresh")
            named = await _client(request, form, oauth, required=False)
            if isinstance(named, JSONResponse):
                return named
            if unproved := _key_required(named, jkt):
                return unproved
            as_named = replace(client, application=named.client_id if named else None)
            pair = await tokens.rotate(form.refresh_token, as_named)
        elif not form.grant_type:
            return oauth_error(400, "invalid_request", "grant_type is required")
        else:
            return oauth_error(
                400,
                "unsupported_grant_type",
                "grant_type must be authorization_code, password, refresh_token or "
                "client_credentials",
            )
    except MfaRequired as exc:  # as Auth0 answers it: the second step is /v1/auth/login/mfa
        problem = problem_for(exc)
        second = {
            "error": problem.error,
            "error_description": problem.message,
            "mfa_token": exc.token,
            "expires_in": exc.expires_in,
        }
        return JSONResponse(second, problem.status, headers=NO_STORE)
    except AuthError as exc:
        return _refusal(exc)
    return _tokens(pair)


async def _proof(
    request: Request, by: OAuthClient | None = None
) -> dpop.Proof | JSONResponse | None:
    """The request's DPoP proof, checked (for this endpoint, new), or §5's refusal
    (RFC 9449); None without one. Proofs are counted before they are checked (`dpop`),
    per address, or per client for a confidential one that proved itself (`by`): each is
    a signature to verify, and a minute's memory."""
    sent = request.headers.getlist(dpop.HEADER)
    if not sent:
        return None
    if by is not None and by.confidential:
        await limit_client(request, "dpop", by.client_id)
    else:
        await limit(request, "dpop")
    try:
        return await taken_proof(request, sent)
    except dpop.InvalidProof as exc:
        return oauth_error(400, "invalid_dpop_proof", str(exc))


def _key_required(client: OAuthClient | None, jkt: str | None) -> JSONResponse | None:
    """The refusal for a client that gets bound tokens alone and sent no proof."""
    if client is None or not client.dpop_bound_access_tokens or jkt is not None:
        return None
    return oauth_error(400, "invalid_dpop_proof", "this client's tokens need a DPoP proof")


async def _repeated(request: Request, form: type[BaseModel]) -> bool:
    """Whether one of the form's parameters was sent more than once (RFC 6749 §3.2)."""
    named = [k for k, _ in (await request.form()).multi_items() if k in form.model_fields]
    return len(named) != len(set(named))


@router.post("/revoke", responses=ERRORS | {200: {"description": "revoked, or nothing to do"}})
async def revoke(
    form: Annotated[RevokeForm, Form()],
    request: Request,
    tokens: RefreshTokensDep,
    oauth: OAuthDep,
) -> Response:
    """RFC 7009: end the session of a refresh token or an access token (an access token
    cannot be taken back alone: its session ends, and films and the mailer refuse it once
    they hear). A registered client proves itself as at the token endpoint, and ends only
    sessions it could refresh; without one, the person's own and public clients'. Unknown,
    expired and already revoked tokens get the same 200 (§2.2); a live one of another
    client is refused (§2.1): 401 invalid_client where no client proved itself, else 400
    unauthorized_client."""
    if await _repeated(request, RevokeForm):
        return oauth_error(400, "invalid_request", "a parameter was sent more than once")
    if not form.token:
        return oauth_error(400, "invalid_request", "token is required")
    try:
        await limit(request, "oauth_token")
        named = await _client(request, form, oauth, required=False)
    except AuthError as exc:
        return _refusal(exc)
    if isinstance(named, JSONResponse):
        return named
    caller, ip = (named.client_id if named else None), client_ip(request)
    if form.token.count(".") == 2:  # a JWT: an access token, if ours and still good
        try:
            claims = request.app.state.verifier.verify(form.token)
            signed_in = (uuid.UUID(str(claims["sid"])), uuid.UUID(str(claims["sub"])))
        except (InvalidToken, KeyError, ValueError):
            return Response(headers=NO_STORE)
        ended = await tokens.revoke(caller, ip, signed_in=signed_in)
    else:
        ended = await tokens.revoke(caller, ip, refresh_token=form.token)
    if not ended:  # §2.1: the client is told (it holds the token: nothing is given away)
        if caller is None:
            return oauth_error(401, "invalid_client", "this token's client must authenticate")
        return oauth_error(400, "unauthorized_client", "the token was issued to another client")
    return Response(headers=NO_STORE)


class ClientBasic(HTTPBasic):
    """The client's HTTP Basic in the OpenAPI schema, read by `_client` (which answers a
    malformed header in §5.2's format, as invalid_client)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


# Where a client may prove itself with an assertion (their URLs may be its audience).
ASSERTED_AT = (TOKEN_URL, "/v1/auth/revoke", "/v1/auth/introspect", PAR_URL)
INTROSPECT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorOut, "description": "`error`: invalid_request"},
    401: {
        "model": OAuthErrorOut,
        "description": "`error`: invalid_client (no client, a public one, a wrong secret "
        "or assertion)",
    },
    429: ERRORS[429],
}
# What an active access token's answer repeats of its claims (`roles` is read anew).
ANSWERED_CLAIMS = frozenset(
    {"client_id", "scope", "sub", "iss", "aud", "exp", "iat", "jti", "sid", "amr", "cnf"}
)


@router.post(
    "/introspect",
    response_model=IntrospectionOut,
    responses=INTROSPECT_ERRORS,
    dependencies=[Security(ClientBasic(scheme_name="clientSecret", auto_error=False))],
)
async def introspect(
    form: Annotated[IntrospectForm, Form()],
    request: Request,
    tokens: RefreshTokensDep,
    user_sessions: UserSessionsDep,
    oauth: OAuthDep,
) -> Response:
    """RFC 7662: whether a token is live now, for a confidential client that proves itself
    (§2.1) with its secret, in HTTP Basic or in the form, or with an assertion it signed.
    An access token is active to a client registered to introspect, while it verifies,
    has not expired and its session and account are live (which auth knows at once, and
    films and the mailer only once they hear), or, a client's own, while that client may
    have it; a refresh token is active to the client whose session it is, while it would
    refresh. Anything else is `{"active": false}` (§2.2, §4)."""
    if await _repeated(request, IntrospectForm):
        return oauth_error(400, "invalid_request", "a parameter was sent more than once")
    try:
        caller = await _client(request, form, oauth, required=True)
        if isinstance(caller, JSONResponse):
            return caller
        if caller is None or not caller.confidential:
            return _not_confidential(_basic_credentials(request), "introspection")
        # Counted on its own once it proved itself (wrong secrets: `_client`).
        await limit_client(request, "introspect", caller.client_id)
    except AuthError as exc:
        return _refusal(exc)
    if not form.token:
        return oauth_error(400, "invalid_request", "token is required")
    if form.token.count(".") == 2:  # a JWT: an access token, if ours
        answer = await _access_token(request, form.token, caller, oauth, user_sessions)
        return _introspected(answer)
    live = await tokens.live(form.token)
    if live is None or live.client_id != caller.client_id:
        return _introspected(INACTIVE)
    settings = request.app.state.settings
    return _introspected(
        IntrospectionOut(
            active=True,
            client_id=live.client_id,
            scope=live.scope,
            sub=str(live.user_id),
            iss=settings.token_issuer,
            exp=int(live.expires_at.timestamp()),
            iat=int(live.issued_at.timestamp()),
            sid=str(live.session_id),
        )
    )


PAR_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OAuthErrorOut,
        "description": "`error`: invalid_request, unsupported_response_type, "
        "request_not_supported or invalid_dpop_proof",
    },
    401: ERRORS[401],
    429: ERRORS[429],
}


@router.post(
    PAR_URL.removeprefix("/v1/auth"),
    status_code=201,
    response_model=PushedOut,
    responses=PAR_ERRORS,
    dependencies=[Security(ClientBasic(scheme_name="clientSecret", auto_error=False))],
)
async def par(form: Annotated[PushedForm, Form()], request: Request, oauth: OAuthDep) -> Response:
    """RFC 9126: an application's authorization request, pushed before it sends the
    browser to the authorization endpoint with its client_id and the `request_uri` given
    back (pushed.py). The client proves itself as at the token endpoint (a public one
    names itself); the request is checked as the authorization endpoint checks it, and
    refused here, with §5.2's `error`, where it would be refused there."""
    if await _repeated(request, PushedForm):
        return oauth_error(400, "invalid_request", "a parameter was sent more than once")
    if form.request_uri is not None:
        return oauth_error(400, "invalid_request", "a request_uri is not pushed")
    if form.request is not None:
        return oauth_error(400, "request_not_supported", "request objects are not taken")
    try:
        client = await _client(request, form, oauth, required=True)
        if not isinstance(client, OAuthClient):
            return client or oauth_error(400, "invalid_request", "client_id is required")
        # Anyone may push as a public client; a confidential one proved itself, and its
        # server may push for all its users from one address.
        if client.confidential:
            await limit_client(request, "par", client.client_id)
        else:
            await limit(request, "par")
    except AuthError as exc:
        return _refusal(exc)
    params = {name: value for name in KEPT if (value := getattr(form, name)) is not None}
    if not any(registered(uri, form.redirect_uri or "") for uri in client.redirect_uris):
        return oauth_error(
            400, "invalid_request", "redirect_uri is missing, or not one the client registered"
        )
    if refused := refusal(params):
        return oauth_error(400, *refused)
    try:  # RFC 9449 §10.1: a proof here binds the code as dpop_jkt does
        proof = await _proof(request, client)
    except AuthError as exc:
        return _refusal(exc)
    if isinstance(proof, JSONResponse):
        return proof
    if proof is not None and params.setdefault("dpop_jkt", proof.jkt) != proof.jkt:
        return oauth_error(400, "invalid_dpop_proof", "dpop_jkt is not the proof's key")
    seconds = request.app.state.settings.pushed_request_seconds
    request_uri = await oauth.push(client, params, seconds)
    body = PushedOut(request_uri=request_uri, expires_in=seconds)
    return JSONResponse(body.model_dump(), 201, headers=NO_STORE)


def _not_confidential(basic: tuple[str, str] | None, what: str) -> JSONResponse:
    """401 invalid_client for a public client, or none (with the challenge where it came
    in HTTP Basic: §5.2)."""
    headers = {"WWW-Authenticate": 'Basic realm="token"'} if basic else None
    description = f"{what} is for confidential clients, with their secret or key"
    return oauth_error(401, "invalid_client", description, headers)


async def _access_token(
    request: Request,
    token: str,
    caller: OAuthClient,
    oauth: OAuthDep,
    user_sessions: UserSessionsDep,
) -> IntrospectionOut:
    """An access token's answer: active to a client that may introspect, while it verifies
    and has not expired (without the verifier's leeway for clocks), and its session and
    account are live, or for a client's own token, while that client may still have one;
    its claims, with the account's roles as they are now."""
    if not caller.introspect:
        return INACTIVE
    try:
        claims = request.app.state.verifier.verify(token)
        if clients_own(claims):
            holder = oauth.clients.get(claims["sub"])
            if holder is None or not holder.client_credentials:
                return INACTIVE  # removed, or no longer allowed the grant
            if not covers(" ".join(service_scopes(holder)), str(claims.get("scope", ""))):
                return INACTIVE  # a scope since taken from it
            roles: list[str] = []
        else:
            live = await user_sessions.authenticate(claims)
            roles = [] if live.application else list(live.user.roles)
    except (InvalidToken, NotAuthenticated):
        return INACTIVE
    if claims["exp"] <= time.time():
        return INACTIVE
    known = {name: claims[name] for name in ANSWERED_CLAIMS & claims.keys()}
    kind = dpop.token_type(claims.get("cnf", {}).get("jkt"))
    return IntrospectionOut(active=True, token_type=kind, roles=roles, **known)


def _introspected(body: IntrospectionOut) -> Response:
    return JSONResponse(body.model_dump(exclude_none=True), headers=NO_STORE)


def _tokens(pair: TokenPair, id_token: str | None = None, scope: str | None = None) -> Response:
    """RFC 6749 §5.1's answer (members that do not apply left out)."""
    body = OAuthTokenOut(
        access_token=pair.access_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        id_token=id_token,
        scope=scope,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=NO_STORE)


VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1


async def _code_grant(
    request: Request, form: TokenForm, oauth: OAuthDep, origin: Client
) -> Response:
    if not form.code or not form.redirect_uri or not form.code_verifier:
        return oauth_error(
            400, "invalid_request", "code, redirect_uri and code_verifier are required"
        )
    if not VERIFIER.fullmatch(form.code_verifier):
        return oauth_error(400, "invalid_request", "code_verifier is not an RFC 7636 verifier")
    await limit(request, "oauth_token")
    client = await _client(request, form, oauth, required=True)
    if not isinstance(client, OAuthClient):
        return client or oauth_error(400, "invalid_request", "client_id is required")
    if unproved := _key_required(client, origin.dpop_jkt):
        return unproved
    if client.confidential:  # its refresh tokens are bound to its secret or keys instead
        origin = replace(origin, binds_session=False)
    redeemed = await oauth.redeem(client, form.code, form.redirect_uri, form.code_verifier, origin)
    return _tokens(redeemed.pair, redeemed.id_token, redeemed.scope)


async def _client_credentials(
    request: Request, form: TokenForm, oauth: OAuthDep, jkt: str | None
) -> Response:
    """A confidential client's own access token (§4.4): its secret, the grant allowed to
    it, and a scope it may be granted; no refresh token (§4.4.3). Bound to the key `jkt`
    where the request came with a proof."""
    client = await _client(request, form, oauth, required=True)
    if isinstance(client, JSONResponse):
        return client
    if client is None or not client.confidential:
        return _not_confidential(_basic_credentials(request), "this grant")
    if not client.client_credentials:
        return oauth_error(400, "unauthorized_client", "this client may not use this grant")
    if unproved := _key_required(client, jkt):
        return unproved
    await limit_client(request, "client_token", client.client_id)
    try:
        issued = await oauth.client_token(client, form.scope, client_ip(request), jkt)
    except NoScope:
        return oauth_error(400, "invalid_scope", "no scope asked for may be granted to it")
    body = OAuthTokenOut(
        access_token=issued.access_token,
        token_type=dpop.token_type(jkt),
        expires_in=issued.expires_in,
        scope=issued.scope,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=NO_STORE)


async def _client(
    request: Request, form: ClientForm, oauth: OAuthDep, *, required: bool
) -> OAuthClient | JSONResponse | None:
    """The client the request names and proves (HTTP Basic, or client_id and client_secret
    in the form: RFC 6749 §2.3.1; or an assertion it signed: RFC 7523 §2.2), or the §5.2
    refusal. None where it names none, or (not `required`) only a client_id no
    application has, and no assertion: the password and refresh grants ignore those, as
    they always did.

    Wrong secrets and assertions spend a budget per address and client (`client_auth`;
    unknown ids share one), checked before each attempt, so that guesses stop there
    (RateLimited) wherever a client proves itself."""
    basic = _basic_credentials(request)
    assertion = form.client_assertion
    if assertion is not None or form.client_assertion_type is not None:
        client_id = _asserted_client(form, basic)
        if isinstance(client_id, JSONResponse):
            return client_id
    else:
        if basic is not None and (form.client_secret or form.client_id not in (None, basic[0])):
            return oauth_error(400, "invalid_request", "the client is named twice")
        named, secret = basic or (form.client_id, form.client_secret)
        if not named or (not required and basic is None and named not in oauth.clients):
            return None
        client_id = named
    counted = client_id if client_id in oauth.clients else "?"
    await limit_failures(request, "client_auth", counted, failed=False)
    try:
        if assertion is not None:
            return await oauth.authenticate_assertion(client_id, assertion, _audiences(request))
        return oauth.authenticate(client_id, secret)
    except ClientRefused:
        await limit_failures(request, "client_auth", counted, failed=True)
        headers = {"WWW-Authenticate": 'Basic realm="token"'} if basic else None
        what = "its secret is wrong" if assertion is None else "the assertion is not taken"
        return oauth_error(401, "invalid_client", f"the client is unknown, or {what}", headers)


def _asserted_client(form: ClientForm, basic: tuple[str, str] | None) -> str | JSONResponse:
    """The client_id an assertion names, or §5.2's invalid_request for one that cannot
    be read, or that comes with another way of proving who the client is."""
    if basic is not None or form.client_secret is not None:
        return oauth_error(400, "invalid_request", "the client proves itself twice")
    if form.client_assertion_type != ASSERTION_TYPE or not form.client_assertion:
        return oauth_error(
            400,
            "invalid_request",
            f"client_assertion_type is {ASSERTION_TYPE}, with a client_assertion",
        )
    try:
        client_id = asserted_client(form.client_assertion)
    except MalformedAssertion:
        return oauth_error(400, "invalid_request", "client_assertion is not a JWT with an iss")
    if form.client_id not in (None, client_id):
        return oauth_error(400, "invalid_request", "the client is named twice")
    return client_id


def _audiences(request: Request) -> frozenset[str]:
    """What an assertion may name as its audience: auth's issuer, and with
    AUTH_CLIENT_ASSERTION_AUDIENCE=issuer_and_endpoints the URLs of the endpoints that
    take assertions, under AUTH_PUBLIC_URL (never the request's own address, whose Host
    the client chooses)."""
    settings = request.app.state.settings
    if settings.client_assertion_audience == "issuer" or not settings.public_url:
        return frozenset({settings.token_issuer})
    base = settings.public_url.rstrip("/")
    return frozenset({settings.token_issuer, *(f"{base}{path}" for path in ASSERTED_AT)})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """HTTP Basic's client_id and secret (RFC 6749 §2.3.1: each form-urlencoded first),
    or None without the header."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ("", "")  # named, unreadably: no client has that
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


async def _password_grant(
    request: Request, accounts: AccountsDep, username: str, password: str, client: Client
) -> TokenPair:
    try:
        email = _email.validate_python(username)
    except ValidationError as exc:  # no account can have it
        raise InvalidCredentials from exc
    await limit(request, "login", email)
    return await accounts.login(email, password, client)


def _refusal(exc: AuthError) -> JSONResponse:
    retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RetryLater) else {}
    for cls in type(exc).__mro__:
        if cls in GRANT_REFUSALS:
            return oauth_error(400, "invalid_grant", GRANT_REFUSALS[cls], retry)
    if isinstance(exc, RetryLater):  # a rate limit
        return oauth_error(429, "rate_limited", "too many requests, try again later", retry)
    raise exc
