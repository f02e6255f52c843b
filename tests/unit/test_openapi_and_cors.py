"""Each service's OpenAPI declares its security scheme on every protected operation (so
Swagger's "Authorize" works), and CORS answers only the origins it is told to allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from auth_service.app import create_app as auth_app
from films_service.app import create_app as films_app
from films_service.config import FilmsSettings
from mailer_service.app import create_app as mailer_app
from mailer_service.config import MailerSettings
from tests.conftest import auth_settings_for

# Operations anyone may call: everything else must declare a security scheme.
PUBLIC = {
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/verify"),
    ("post", "/v1/auth/verify/resend"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/token/refresh"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/password/forgot"),
    ("post", "/v1/auth/password/reset"),
    ("post", "/v1/auth/login/code"),
    ("post", "/v1/auth/login/code/verify"),
    ("post", "/v1/auth/login/mfa"),
    ("post", "/v1/auth/login/passkey/options"),
    ("post", "/v1/auth/login/passkey"),
    ("post", "/v1/auth/oauth/client"),
    ("post", "/v1/auth/revoke"),
    ("post", "/v1/auth/oauth/logout-request"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/.well-known/openid-configuration"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}


def apps(key_dir: Path, **cors: list[str]) -> dict[str, FastAPI]:
    public = key_dir / "public.pem"
    return {
        "auth": auth_app(auth_settings_for(key_dir, cors_origins=cors.get("auth", []))),
        "films": films_app(
            FilmsSettings(public_key_path=public, cors_origins=cors.get("films", []))
        ),
        "mailer": mailer_app(MailerSettings(public_key_path=public)),
    }


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in app.openapi()["paths"].items()
        for method, op in item.items()
    ]


@pytest.mark.parametrize("service", ["auth", "films", "mailer"])
def test_every_protected_operation_declares_its_scheme(key_dir: Path, service: str) -> None:
    app = apps(key_dir)[service]
    schemes = app.openapi()["components"]["securitySchemes"]
    protected = [(m, p, op) for m, p, op in operations(app) if (m, p) not in PUBLIC]
    assert protected
    for method, path, op in protected:
        assert op.get("security"), f"{method.upper()} {path} declares no security scheme"
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes)
        assert "401" in op["responses"], f"{method.upper()} {path} does not document its 401"
    for method, path, op in operations(app):
        if (method, path) in PUBLIC:
            assert not op.get("security"), f"{method.upper()} {path} is public"


def test_auth_authorizes_through_its_token_endpoint(key_dir: Path) -> None:
    """People through the token endpoint; services, to introspect, as clients."""
    openapi = apps(key_dir)["auth"].openapi()
    people, clients = openapi["components"]["securitySchemes"].values()
    assert people["type"] == "oauth2"
    assert people["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert clients == {"type": "http", "scheme": "basic"}
    assert openapi["paths"]["/v1/auth/introspect"]["post"]["security"] == [{"clientSecret": []}]


@pytest.mark.parametrize("service", ["films", "mailer"])
def test_token_holders_use_a_bearer_scheme(key_dir: Path, service: str) -> None:
    schemes = apps(key_dir)[service].openapi()["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]


async def call(
    app: FastAPI, method: str, origin: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Straight into the ASGI app (no lifespan: /healthz needs none)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
        return await client.request(
            method, "/healthz", headers={"Origin": origin, **(headers or {})}
        )


async def preflight(app: FastAPI, origin: str) -> httpx.Response:
    asks = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization",
    }
    return await call(app, "OPTIONS", origin, asks)


@pytest.mark.parametrize("service", ["auth", "films"])
async def test_cors_allows_only_the_listed_origins(key_dir: Path, service: str) -> None:
    app = apps(key_dir, **{service: ["https://app.example.com"]})[service]
    allowed = await preflight(app, "https://app.example.com")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = await preflight(app, "https://evil.example")
    assert "access-control-allow-origin" not in refused.headers
    answer = await call(app, "GET", "https://app.example.com")
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("service", ["auth", "films"])
async def test_no_cors_by_default(key_dir: Path, service: str) -> None:
    answer = await call(apps(key_dir)[service], "GET", "https://app.example.com")
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize("origin", ["*", "https://app.example.com/", "app.example.com", ""])
def test_a_misspelt_origin_is_refused_at_start(origin: str) -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        FilmsSettings(cors_origins=[origin])
