"""The authorization endpoint's half in auth (`oauth.py`), for the web front end that
serves the page: whether a client and redirect URI go together, and a code for a signed-in
person who allowed the application in. The code is traded at the token endpoint
(`routes/token.py`, `grant_type=authorization_code`). The applications a person allowed are
listed, and taken back, here too; and OpenID Connect's userinfo."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from auth_service.deps import CallerDep, OAuthDep
from auth_service.errors import (
    ApplicationSession,
    ConsentNotFound,
    ConsentRequired,
    InvalidRequestUri,
    LogoutRefused,
    PushedRequestRequired,
    SignInTooOld,
    UnknownClient,
)
from auth_service.http_errors import responses
from auth_service.oauth import CODE_SECONDS, SCOPES, Authorization, Pushed
from auth_service.routes import NO_STORE, client_ip, no_store
from common.authorization import CHALLENGE, THUMBPRINT
from common.jwt import InvalidToken

router = APIRouter(prefix="/v1/auth/oauth", tags=["oauth2"])


class ClientIn(BaseModel):
    """A request's client, and its redirect URI or, where the client pushed the request
    (RFC 9126), its request_uri."""

    client_id: str = Field(max_length=128)
    redirect_uri: str | None = Field(default=None, max_length=2000)
    request_uri: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_request(self) -> Self:
        if (self.redirect_uri is None) == (self.request_uri is None):
            raise ValueError("give a redirect_uri, or the request_uri of a pushed request")
        return self


class ClientOut(BaseModel):
    client_id: str
    name: str
    trusted: bool  # first-party: the person is not asked to allow it
    issuer: str  # for the answer at the redirect URI (`iss`, RFC 9207)
    scopes: list[str]  # what it may be granted (the consent page names no other)
    # It pushes its requests (RFC 9126): one with a redirect_uri instead is refused.
    require_pushed_authorization_requests: bool
    # What the page reads of the pushed request named (pushed.SHOWN: not its nonce or
    # challenge).
    request: dict[str, str] | None = None


class AuthorizeIn(ClientIn):
    """The request a code is for: the request_uri of a request the application pushed,
    which holds the rest, or the rest."""

    # RFC 7636: S256 only, so a challenge is 32 bytes in base64url.
    code_challenge: str | None = Field(default=None, pattern=f"^{CHALLENGE.pattern}$")
    code_challenge_method: Literal["S256"] = "S256"
    scope: str = Field(default="", max_length=1024)
    nonce: str | None = Field(default=None, min_length=1, max_length=512)
    max_age: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # The key whose DPoP proof alone redeems the code (RFC 9449 §10).
    dpop_jkt: str | None = Field(default=None, pattern=f"^{THUMBPRINT.pattern}$")
    # The person said yes just now (remembered); without it, an application that is not
    # trusted needs an earlier yes to these scopes, or the answer is 403 consent_required.
    consented: bool = False

    @model_validator(mode="after")
    def _whole(self) -> Self:
        held = {"code_challenge", "scope", "nonce", "max_age", "dpop_jkt"} & self.model_fields_set
        if self.request_uri is not None and held:
            raise ValueError(f"a pushed request holds its own {sorted(held)}")
        if self.redirect_uri is not None and self.code_challenge is None:
            raise ValueError("a code_challenge is required")
        return self


class CodeOut(BaseModel):
    code: str
    expires_in: int
    scope: str  # what is granted: "openid", "email" and "films" where asked for


@router.post(
    "/client", response_model=ClientOut, responses=responses(UnknownClient, InvalidRequestUri, 422)
)
async def client(body: ClientIn, oauth: OAuthDep, request: Request) -> ClientOut:
    """The application, if `redirect_uri` is one of its own: else the page must say so
    and send the browser nowhere (RFC 6749 §4.1.2.1). With a `request_uri`, the request
    it pushed, while it is live (else 400 invalid_request_uri: a page that says so, too)."""
    pushed = None
    if body.request_uri is not None:
        pushed = await oauth.pushed(body.client_id, body.request_uri)
        found = oauth.client(body.client_id, pushed["redirect_uri"])
    else:
        found = oauth.client(body.client_id, body.redirect_uri or "")
    issuer = request.app.state.settings.token_issuer
    return ClientOut(
        client_id=found.client_id,
        name=found.name,
        trusted=found.trusted,
        issuer=issuer,
        scopes=list(found.scopes if found.scopes is not None else SCOPES),
        require_pushed_authorization_requests=found.require_pushed_authorization_requests,
        request=pushed,
    )


@router.post(
    "/authorize",
    response_model=CodeOut,
    responses=responses(
        UnknownClient,
        InvalidRequestUri,
        PushedRequestRequired,
        SignInTooOld,
        ConsentRequired,
        ApplicationSession,
        401,
        422,
    ),
)
async def authorize(
    body: AuthorizeIn, caller: CallerDep, oauth: OAuthDep, request: Request
) -> Response:
    """A code for the application, allowed by the caller (a live session), for the
    request it pushed (which the code spends) or the one given."""
    asked: Authorization | Pushed
    if body.request_uri is not None:
        asked = Pushed(body.client_id, body.request_uri)
    else:
        assert body.redirect_uri is not None and body.code_challenge is not None  # _whole
        asked = Authorization(
            body.client_id,
            body.redirect_uri,
            body.code_challenge,
            body.scope,
            body.nonce,
            body.max_age,
            dpop_jkt=body.dpop_jkt,
        )
    code, scope = await oauth.authorize(caller, asked, client_ip(request), body.consented)
    return no_store(CodeOut(code=code, expires_in=CODE_SECONDS, scope=scope))


class LogoutRequestIn(BaseModel):
    """OpenID Connect RP-Initiated Logout §2's parameters, as the application sent them."""

    id_token_hint: str | None = Field(default=None, max_length=8192)
    client_id: str | None = Field(default=None, max_length=128)
    post_logout_redirect_uri: str | None = Field(default=None, max_length=2000)


class LogoutRequestOut(BaseModel):
    client_id: str | None  # the application asking, where the request names one
    name: str | None
    post_logout_redirect_uri: str | None  # registered: where the browser may go after
    sub: str | None  # from the ID token hint: whom it signed in, in which session
    sid: str | None
    issuer: str


@router.post(
    "/logout-request",
    response_model=LogoutRequestOut,
    responses=responses(LogoutRefused, 422),
)
async def logout_request(body: LogoutRequestIn, oauth: OAuthDep, request: Request) -> Response:
    """For the web front end's logout page: what an application's request to sign the
    person out names, checked. The ID token hint must be one we signed for one of our
    applications (expired ones too); client_id, if given, that same application; the
    post-logout redirect URI one it registered. A hint grants nothing: the page still
    asks the person, and acts as their session."""
    hint = None
    if body.id_token_hint is not None:
        try:
            hint = request.app.state.verifier.signed(body.id_token_hint)
        except InvalidToken:
            raise LogoutRefused from None
    checked = oauth.logout_request(hint, body.client_id, body.post_logout_redirect_uri)
    answer = LogoutRequestOut(
        client_id=checked.client.client_id if checked.client else None,
        name=checked.client.name if checked.client else None,
        post_logout_redirect_uri=checked.post_logout_redirect_uri,
        sub=checked.sub,
        sid=checked.sid,
        issuer=request.app.state.settings.token_issuer,
    )
    return no_store(answer)


class UserInfoOut(BaseModel):
    """OpenID Connect Core §5.3: `sub`, and the address where the `email` scope was
    granted (always, to the person's own session)."""

    sub: str
    email: str | None = None
    email_verified: bool | None = None


@router.get("/userinfo", response_model=UserInfoOut, responses=responses(401))
async def userinfo(caller: CallerDep) -> Response:
    """Who the access token signs in as, as an OpenID Connect library asks."""
    info = UserInfoOut(sub=str(caller.user.id))
    if caller.application is None or "email" in caller.scope.split():
        info.email = caller.user.email
        info.email_verified = caller.user.email_verified
    return JSONResponse(info.model_dump(exclude_none=True), headers=NO_STORE)


class ConsentOut(BaseModel):
    client_id: str
    name: str
    scope: str  # what the person allowed it, space-separated
    granted_at: datetime  # their latest yes


class ConsentsOut(BaseModel):
    items: list[ConsentOut]


@router.get("/consents", response_model=ConsentsOut, responses=responses(ApplicationSession, 401))
async def consents(caller: CallerDep, oauth: OAuthDep) -> ConsentsOut:
    """The applications the caller allowed, most recent first (trusted ones ask nobody,
    so they are not among them): each keeps signing them in without asking until taken
    back."""
    items = [ConsentOut(**vars(c)) for c in await oauth.consents(caller.user.id)]
    return ConsentsOut(items=items)


@router.delete(
    "/consents/{client_id}",
    status_code=204,
    responses=responses(ConsentNotFound, ApplicationSession, 401),
)
async def revoke_consent(
    client_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9._~-]{1,128}$")],
    caller: CallerDep,
    oauth: OAuthDep,
    request: Request,
) -> Response:
    """Take back the caller's yes to the application: its sessions end at once (its
    tokens are refused), and it must ask again."""
    await oauth.revoke(caller, client_id, client_ip(request))
    return Response(status_code=204)
