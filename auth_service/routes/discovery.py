"""`GET /.well-known/openid-configuration`: OpenID Provider metadata (OpenID Connect
Discovery 1.0, RFC 8414), so an ordinary OAuth2/OIDC library finds the token endpoint and
the keys without reading our code.

What it says is what there is: a token endpoint with the password and refresh-token
grants, RS256-signed JWT access tokens, the JWKS, revocation and introspection, with
clients proving themselves by a secret or by an assertion they sign (`private_key_jwt`,
client_assertions.py); and, where
AUTH_AUTHORIZATION_ENDPOINT names the web front end's page, the authorization code grant
with PKCE (S256) for the applications in AUTH_OAUTH_CLIENTS, with ID tokens for the
`openid` scope (`oauth.py`); the client credentials grant where a client may use it.
`issuer` is AUTH_TOKEN_ISSUER, the `iss` of every token; URLs start at AUTH_PUBLIC_URL,
or else at the address the request came to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from auth_service.client_assertions import SIGNING_ALGORITHMS
from auth_service.config import AuthSettings, OAuthClient
from auth_service.deps import PAR_URL, TOKEN_URL
from auth_service.oauth import SCOPES
from common import dpop
from common.jwt import ALGORITHM

router = APIRouter(tags=["keys"])

CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "roles", "sid"]


CONFIDENTIAL_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
CLIENT_AUTH = ["none", *CONFIDENTIAL_AUTH]
ID_CLAIMS = ["auth_time", "nonce", "amr", "email", "email_verified"]


def pushed_only(clients: list[OAuthClient]) -> bool:
    """Whether every application (a client with redirect URIs) pushes its requests."""
    applications = [client for client in clients if client.redirect_uris]
    return bool(applications) and all(
        client.require_pushed_authorization_requests for client in applications
    )


def metadata(settings: AuthSettings, base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/")
    meta: dict[str, Any] = {
        "issuer": settings.token_issuer,
        "token_endpoint": f"{base}{TOKEN_URL}",
        "revocation_endpoint": f"{base}/v1/auth/revoke",
        # RFC 7662, for confidential clients (services among them).
        "introspection_endpoint": f"{base}/v1/auth/introspect",
        "introspection_endpoint_auth_methods_supported": CONFIDENTIAL_AUTH,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "claims_supported": CLAIMS,
        "service_documentation": f"{base}/docs",
        # RFC 9449: the token endpoint binds tokens to the key of a DPoP proof.
        "dpop_signing_alg_values_supported": list(dpop.ALGORITHMS),
    }
    if settings.authorization_endpoint:
        meta |= {
            "authorization_endpoint": settings.authorization_endpoint,
            "userinfo_endpoint": f"{base}/v1/auth/oauth/userinfo",
            "grant_types_supported": ["authorization_code", "password", "refresh_token"],
            "token_endpoint_auth_methods_supported": CLIENT_AUTH,
            "revocation_endpoint_auth_methods_supported": CLIENT_AUTH,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SCOPES),
            "claims_supported": CLAIMS + ID_CLAIMS,
            # RFC 9207: the answer at the redirect URI names its issuer (`iss`).
            "authorization_response_iss_parameter_supported": True,
            # OpenID Connect Back-Channel Logout (backchannel.py), `sid` in its tokens.
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            # RFC 9126 (pushed.py): required of all where every application requires it.
            "pushed_authorization_request_endpoint": f"{base}{PAR_URL}",
            "require_pushed_authorization_requests": pushed_only(settings.oauth_clients),
            # No request objects (RFC 9101, OpenID Connect Core §6), by value or from a
            # URL: a pushed request's request_uri is auth's own.
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }
    if any(client.client_credentials for client in settings.oauth_clients):
        meta["grant_types_supported"] = [*meta["grant_types_supported"], "client_credentials"]
        meta["token_endpoint_auth_methods_supported"] = CLIENT_AUTH
        meta["revocation_endpoint_auth_methods_supported"] = CLIENT_AUTH
    if settings.end_session_endpoint:  # OpenID Connect RP-Initiated Logout
        meta["end_session_endpoint"] = settings.end_session_endpoint
    for endpoint in ("token", "revocation", "introspection"):  # what assertions are signed with
        if "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]:
            meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] = SIGNING_ALGORITHMS
    return meta


@router.get("/.well-known/openid-configuration")
async def openid_configuration(request: Request) -> JSONResponse:
    settings: AuthSettings = request.app.state.settings
    if settings.public_url:
        return JSONResponse(
            metadata(settings, settings.public_url),
            headers={"Cache-Control": "public, max-age=300"},
        )
    # Built from the request's own address: not for shared caches.
    return JSONResponse(
        metadata(settings, str(request.base_url)), headers={"Cache-Control": "no-cache"}
    )
