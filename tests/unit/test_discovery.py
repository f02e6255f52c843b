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


def test_every_endpoint_that_takes_an_assertion_says_what_it_may_be_signed_with() -> None:
    """private_key_jwt is named with the algorithms wherever a client may prove itself,
    and nowhere else (RFC 8414 §2: the algorithms go with the method)."""
    introspecting = metadata(AuthSettings(oauth_clients=[SERVICE]), "https://id.example")
    assert "private_key_jwt" in introspecting["introspection_endpoint_auth_methods_supported"]
    assert "RS256" in introspecting["introspection_endpoint_auth_signing_alg_values_supported"]
    assert "token_endpoint_auth_signing_alg_values_supported" not in introspecting

    own = SERVICE.model_copy(update={"client_credentials": True})
    for settings in (
        AuthSettings(oauth_clients=[own]),
        AuthSettings(authorization_endpoint="https://web.example/oauth/authorize"),
    ):
        meta = metadata(settings, "https://id.example")
        for endpoint in ("token", "revocation", "introspection"):
            assert "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]
            algorithms = meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
            assert "ES256" in algorithms and not {"none", "HS256"} & set(algorithms)


def test_pushed_requests_are_required_of_all_only_where_every_application_must_push() -> None:
    """RFC 9126 §5: `require_pushed_authorization_requests` is the server's, so it says
    true only where no application may send a request in the browser's address."""
    endpoint = "https://web.example/oauth/authorize"
    app = OAuthClient(client_id="app", name="App", redirect_uris=["https://app.example/cb"])
    pushing = app.model_copy(update={"require_pushed_authorization_requests": True})
    other = pushing.model_copy(update={"client_id": "other"})
    for clients, required in (
        ([], False),
        ([app], False),
        ([pushing, app.model_copy(update={"client_id": "plain"})], False),
        ([pushing, other, SERVICE], True),  # a service makes no authorization requests
    ):
        meta = metadata(
            AuthSettings(oauth_clients=clients, authorization_endpoint=endpoint),
            "https://id.example",
        )
        assert meta["pushed_authorization_request_endpoint"] == "https://id.example/v1/auth/par"
        assert meta["require_pushed_authorization_requests"] is required, clients
        assert meta["request_parameter_supported"] is meta["request_uri_parameter_supported"]
        assert meta["request_uri_parameter_supported"] is False  # OIDC's default is true
    assert "pushed_authorization_request_endpoint" not in metadata(
        AuthSettings(oauth_clients=[SERVICE]), "https://id.example"
    )
