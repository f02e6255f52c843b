"""The auth routes' dependencies: the rule objects the lifespan built, and the caller.

Auth's Bearer routes declare an OAuth2 password flow pointing at `/v1/auth/token`, so
Swagger's "Authorize" logs in with an email and a password. The caller is checked against
the database on every call: the account must exist and be enabled, and the token's session
must not have ended.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from auth_service.account import SelfService
from auth_service.accounts import Accounts
from auth_service.admin_notices import LogoutNotices
from auth_service.admin_users import UserAdmin, require_admin
from auth_service.errors import ApplicationSession
from auth_service.login_codes import CodeLogin
from auth_service.oauth import OAuth
from auth_service.passkeys import Passkeys
from auth_service.refresh import RefreshTokens
from auth_service.two_step import TwoStep
from auth_service.user_sessions import Caller, UserSessions
from common.bearer import holder_claims, invalid_token, presented

TOKEN_URL = "/v1/auth/token"
PAR_URL = "/v1/auth/par"  # RFC 9126

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    auto_error=False,
    description="Log in with an email (as the username) and a password; "
    "or paste an access token from any other login",
)


# `async def`, though they never wait: FastAPI runs a plain `def` dependency on its thread
# pool, a hand-off to another thread and back on every request.
async def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


async def get_refresh_tokens(request: Request) -> RefreshTokens:
    tokens: RefreshTokens = request.app.state.refresh_tokens
    return tokens


async def get_code_login(request: Request) -> CodeLogin:
    code_login: CodeLogin = request.app.state.code_login
    return code_login


async def get_self_service(request: Request) -> SelfService:
    self_service: SelfService = request.app.state.self_service
    return self_service


async def get_user_sessions(request: Request) -> UserSessions:
    user_sessions: UserSessions = request.app.state.user_sessions
    return user_sessions


async def get_user_admin(request: Request) -> UserAdmin:
    user_admin: UserAdmin = request.app.state.user_admin
    return user_admin


async def get_logout_notices(request: Request) -> LogoutNotices:
    notices: LogoutNotices = request.app.state.logout_notices
    return notices


async def get_two_step(request: Request) -> TwoStep:
    two_step: TwoStep = request.app.state.two_step
    return two_step


async def get_passkeys(request: Request) -> Passkeys:
    passkeys: Passkeys = request.app.state.passkeys
    return passkeys


async def get_oauth(request: Request) -> OAuth:
    oauth: OAuth = request.app.state.oauth
    return oauth


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
RefreshTokensDep = Annotated[RefreshTokens, Depends(get_refresh_tokens)]
CodeLoginDep = Annotated[CodeLogin, Depends(get_code_login)]
SelfServiceDep = Annotated[SelfService, Depends(get_self_service)]
UserSessionsDep = Annotated[UserSessions, Depends(get_user_sessions)]
UserAdminDep = Annotated[UserAdmin, Depends(get_user_admin)]
TwoStepDep = Annotated[TwoStep, Depends(get_two_step)]
PasskeysDep = Annotated[Passkeys, Depends(get_passkeys)]
OAuthDep = Annotated[OAuth, Depends(get_oauth)]
LogoutNoticesDep = Annotated[LogoutNotices, Depends(get_logout_notices)]


# What an application's session (an authorization code's) may call here: who it signs in
# as, OpenID Connect's userinfo, which tells it no more than its scopes allow. The rest
# (`me` with the address and roles, password, address, sessions, second factors, consents,
# codes for other applications) is the person's own, at the site itself.
APPLICATION_ROUTES = {("GET", "/v1/auth/oauth/userinfo")}


async def current_caller(
    request: Request,
    _: Annotated[str | None, Depends(oauth2_scheme)],  # OpenAPI's (Swagger's Authorize)
    user_sessions: UserSessionsDep,
) -> Caller:
    """The verified caller, or 401 with `WWW-Authenticate: Bearer error="invalid_token"`
    (DPoP's challenge for a token sent as DPoP: common/bearer.py); 403
    `application_session` for an application's session outside APPLICATION_ROUTES."""
    token, as_dpop = presented(request)
    if not token:
        raise invalid_token("missing bearer token")
    claims = await holder_claims(request, token, as_dpop)
    caller = await user_sessions.authenticate(claims)
    if caller.application:  # (the route looked up for an application's session alone)
        route = getattr(request.scope.get("route"), "path", request.url.path)
        if (request.method, route) not in APPLICATION_ROUTES:
            raise ApplicationSession
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def current_admin(request: Request, caller: CallerDep) -> Caller:
    """The caller, if the database says they hold the admin role (and, with
    AUTH_ADMIN_REQUIRES_MFA, their session passed two-step sign-in); else 403."""
    require_admin(caller, request.app.state.settings.admin_requires_mfa)
    return caller


AdminCallerDep = Annotated[Caller, Depends(current_admin)]


def user_agent(request: Request) -> str | None:
    """The User-Agent as shown in the session list: printable characters, at most 512."""
    given = request.headers.get("user-agent", "")
    return "".join(c for c in given if c.isprintable())[:512] or None
