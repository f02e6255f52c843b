"""The OpenID metadata names what there is, and no more."""

from __future__ import annotations

from auth_service.config import AuthSettings, OAuthClient
from auth_service.routes.discovery import metadata

SERVICE = OAuthClient(client_id="reviews", name="Reviews", secret_sha256="0" * 64, introspect=True)


def test_the_client_credentials_grant_is_named_only_where_a_client_may_use_it() -> None:
    introspecting = metadata(AuthSettings(oauth_clients=[SERVICE]), "https://id.example")
    assert "client_credentials" not in introspecting["grant_types_supported"]
    assert introspecting["introspection_endpoint"] == "https://id.example/v1/auth/introspect"
    assert introspecting["token_endpoint_auth_methods_supported"] == ["none"]

    own = SERVICE.model_copy(update={"client_credentials": True})
    granting = metadata(AuthSettings(oauth_clients=[own]), "https://id.example")
    assert granting["grant_types_supported"][-1] == "client_credentials"
    assert "client_secret_basic" in granting["token_endpoint_auth_methods_supported"]
