"""`GET /.well-known/openid-configuration`: OpenID Provider metadata (OpenID Connect
Discovery 1.0, RFC 8414), so an ordinary OAuth2/OIDC library finds the token endpoint and
the keys without reading our code.

What it says is what there is: a token endpoint for public clients with the password and
refresh-token grants, RS256-signed JWT access tokens, the JWKS. No authorization endpoint
(so no response types) and no scopes; no separate ID token either, so the signing
algorithm named (OIDC requires the member) is the access tokens'. `issuer` is
AUTH_TOKEN_ISSUER, the `iss` of every token; URLs start at AUTH_PUBLIC_URL, or else at
the address the request came to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from auth_service.config import AuthSettings
from auth_service.deps import TOKEN_URL
from common.jwt import ALGORITHM

router = APIRouter(tags=["keys"])

CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "roles", "sid"]


def metadata(settings: AuthSettings, base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/")
    return {
        "issuer": settings.token_issuer,
        "token_endpoint": f"{base}{TOKEN_URL}",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "claims_supported": CLAIMS,
        "service_documentation": f"{base}/docs",
    }


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
