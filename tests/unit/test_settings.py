"""Settings that would be ignored, or would leak, stop the service at start-up with a clear
message; and no message about a setting ever shows a secret."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from auth_service.app import create_app
from auth_service.config import AuthSettings
from auth_service.oauth import assured, registered
from common.kafka import KafkaSettings
from mailer_service.config import MailerSettings
from tests.conftest import auth_settings_for
from tests.support import self_signed_cert

SECRET = "s3cret-value-nobody-may-see"


def test_plaintext_is_the_default_and_passes_nothing_else() -> None:
    assert KafkaSettings(bootstrap_servers="b:9092").client_options() == {
        "bootstrap_servers": "b:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_over_tls_reaches_every_client_option(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    options = KafkaSettings(
        security_protocol="SASL_SSL",
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SECRET,
    ).client_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "localhost:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": SECRET,
    }
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_an_encrypted_client_key_is_opened_with_its_password(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(SECRET.encode()),
        )
    )
    tls: dict[str, Any] = {"security_protocol": "SSL", "ssl_certfile": cert, "ssl_keyfile": key}
    assert KafkaSettings(**tls, ssl_key_password=SECRET).tls
    with pytest.raises(ValidationError, match="KAFKA_SSL_\\* files cannot be used"):
        KafkaSettings(**tls, ssl_key_password="wrong")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sasl_username": "svc"}, "KAFKA_SASL_\\* settings are ignored"),
        ({"ssl_cafile": "ca.pem"}, "KAFKA_SSL_\\* settings are ignored"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "svc"},
            "needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "svc",
                "sasl_password": SECRET,
            },
            "would send the password in the clear",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": "c.pem"}, "go together"),
        ({"security_protocol": "SSL", "ssl_key_password": SECRET}, "is ignored without"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent.pem"}, "cannot be used"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_settings_that_would_be_ignored_or_leak_are_refused(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        KafkaSettings(**settings)
    assert SECRET not in str(caught.value)


def test_scram_over_plaintext_is_allowed() -> None:
    """SCRAM never sends the password itself (the records still travel in the clear)."""
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password=SECRET,
    )
    assert "ssl_context" not in settings.client_options()


@pytest.mark.parametrize(
    ("settings", "values"),
    [
        (KafkaSettings, {"sasl_password": SECRET, "security_protocol": "SSL"}),
        (AuthSettings, {"code_secret": SECRET, "workers": 2, "redis_url": ""}),
        (AuthSettings, {"database_url": f"postgresql+asyncpg://u:{SECRET}@h/db", "workers": 0}),
        (MailerSettings, {"smtp_password": SECRET, "smtp_port": "not a port"}),
    ],
)
def test_no_settings_error_shows_a_secret(
    settings: type[BaseSettings], values: dict[str, Any]
) -> None:
    """A model-wide check's message once held every input, secrets included (cut short in
    the middle when long, so maybe only part of one)."""
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    assert SECRET not in str(caught.value)
    assert "input_value" not in str(caught.value)


def test_auth_in_production_warns_of_a_broker_in_the_clear(
    key_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    production = auth_settings_for(key_dir, env="production")
    create_app(production, KafkaSettings())
    assert "codes cross the network to the broker in the clear" in caplog.text
    caplog.clear()
    cert, _ = self_signed_cert(tmp_path)
    create_app(production, KafkaSettings(security_protocol="SSL", ssl_cafile=cert))
    create_app(auth_settings_for(key_dir), KafkaSettings())  # development: no warning
    assert "in the clear" not in caplog.text


@pytest.mark.parametrize(("days", "accepted"), [(0, True), (7, False), (13, False), (14, True)])
def test_the_mailer_history_outlasts_the_topics(days: int, accepted: bool) -> None:
    """The history is also the record of the emails already sent: one shorter than a topic
    keeps its events would let a re-read topic send them again."""
    if accepted:
        assert MailerSettings(history_days=days).history_days == days
    else:
        with pytest.raises(ValidationError, match="MAILER_HISTORY_DAYS"):
            MailerSettings(history_days=days)


def test_passkeys_are_bound_to_the_public_address_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "AUTH_PUBLIC_URL",
        "AUTH_TOKEN_ISSUER",
        "AUTH_PASSKEY_ORIGINS",
        "AUTH_PASSKEY_RP_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTH_PUBLIC_URL", "https://id.example.com/auth/")
    settings = AuthSettings()
    assert (settings.passkey_origin_list, settings.passkey_rp) == (
        ["https://id.example.com"],
        "id.example.com",
    )
    # Several front ends under one domain share passkeys bound to it.
    # As a browser names them: lower case, no default port.
    monkeypatch.setenv("AUTH_PASSKEY_ORIGINS", "https://App.Example.com:443,https://example.com/")
    monkeypatch.setenv("AUTH_PASSKEY_RP_ID", "Example.com")
    settings = AuthSettings()
    assert settings.passkey_origin_list == ["https://app.example.com", "https://example.com"]
    assert settings.passkey_rp == "example.com"
    # An issuer that is no URL starts all the same: passkeys then need the setting.
    for name in ("AUTH_PASSKEY_ORIGINS", "AUTH_PASSKEY_RP_ID", "AUTH_PUBLIC_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTH_TOKEN_ISSUER", "auth-service")
    settings = AuthSettings()
    assert (settings.passkey_origin_list, settings.passkey_rp) == ([], "localhost")
    monkeypatch.setenv("AUTH_TOKEN_ISSUER", "http://LOCALHOST:8000/")
    assert AuthSettings().passkey_origin_list == ["http://localhost:8000"]


@pytest.mark.parametrize(
    ("origins", "rp_id"),
    [
        ("https://app.example.com", "other.com"),
        ("https://badexample.com", "example.com"),  # a suffix, but not a subdomain
        ("ftp://example.com", "example.com"),
        ("https://example.com/login", "example.com"),
        ("https://user@example.com", "example.com"),
        ("https://example.com?next=1", "example.com"),
    ],
)
def test_passkey_origins_off_their_domain_are_refused(origins: str, rp_id: str) -> None:
    with pytest.raises(ValidationError, match="AUTH_PASSKEY"):
        AuthSettings(passkey_origins=origins, passkey_rp_id=rp_id)


def client(**overrides: Any) -> dict[str, Any]:
    return {"client_id": "app", "name": "App", "redirect_uris": ["https://a.example/cb"]} | (
        overrides
    )


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example.com/callback?from=x",
        "http://localhost:8765/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:9/cb",
        "com.example.app:/oauth2redirect",
    ],
)
def test_an_application_may_come_back_to(redirect_uri: str) -> None:
    settings = AuthSettings(oauth_clients=[client(redirect_uris=[redirect_uri])])
    assert settings.oauth_clients[0].redirect_uris == [redirect_uri]


def test_a_resource_server_is_a_confidential_client_without_redirect_uris() -> None:
    api = client(redirect_uris=[], secret_sha256="0" * 64, introspect=True)
    assert AuthSettings(oauth_clients=[api]).oauth_clients[0].redirect_uris == []


@pytest.mark.parametrize(
    ("clients", "endpoint", "said"),
    [
        ([client(redirect_uris=["http://app.example.com/cb"])], None, "not a redirect URI"),
        ([client(redirect_uris=["https://a.example/cb#x"])], None, "not a redirect URI"),
        ([client(redirect_uris=["/cb"])], None, "not a redirect URI"),
        ([client(redirect_uris=["javascript:alert(1)"])], None, "not a redirect URI"),
        ([client(redirect_uris=[])], None, "redirect_uris are needed"),
        ([client(redirect_uris=[], secret_sha256="0" * 64)], None, "unless it introspects"),
        ([client(introspect=True)], None, "need a secret"),
        ([client(client_credentials=True)], None, "need a secret"),
        (
            [client(secret_sha256="0" * 64, client_credentials=True, scopes=["openid"])],
            None,
            "no scope a service may get",
        ),
        (
            [client(redirect_uris=[], secret_sha256="0" * 64, introspect=True, scopes=[])],
            None,
            "has no .'scopes'.",  # nothing is granted to it
        ),
        (
            [client(client_id=str(uuid.uuid4()), secret_sha256="0" * 64, client_credentials=True)],
            None,
            "a client_id is no UUID",  # its tokens' sub: never an account's
        ),
        (
            [client(redirect_uris=[], secret_sha256="0" * 64, introspect=True, trusted=False)],
            None,
            "a service .* has no .'trusted'.",
        ),
        (
            [
                client(
                    redirect_uris=[],
                    secret_sha256="0" * 64,
                    introspect=True,
                    require_pushed_authorization_requests=True,
                )
            ],
            None,
            "has no .'require_pushed_authorization_requests'.",  # it makes no requests
        ),
        ([client(), client()], None, "given twice"),
        ([client(client_id="api")], None, "AUTH_TOKEN_AUDIENCE"),  # ID tokens as access
        ([client(client_id="a b")], None, "client_id"),
        ([client(client_id="..")], None, "dots alone"),  # a path segment of its own
        ([client(secret_sha256="not hex")], None, "secret_sha256"),
        ([client(grant_types=["x"])], None, "Extra inputs"),
        ([client(backchannel_logout_uri="http://app.example/bc")], None, "back-channel"),
        ([client(backchannel_logout_uri="com.example.app:/bc")], None, "back-channel"),
        ([client(scopes=["profile"])], None, "scopes"),  # not one auth grants
        ([client(post_logout_redirect_uris=["http://app.example/bye"])], None, "redirect URI"),
        ([], "ftp://web.example/oauth/authorize", "AUTH_AUTHORIZATION_ENDPOINT"),
        ([], "https://web.example/oauth/authorize#x", "AUTH_AUTHORIZATION_ENDPOINT"),
    ],
)
def test_a_misconfigured_application_stops_the_start(
    clients: list[dict[str, Any]], endpoint: str | None, said: str
) -> None:
    with pytest.raises(ValidationError, match=said):
        AuthSettings(oauth_clients=clients, authorization_endpoint=endpoint)
    if endpoint is not None:  # the logout page's address is checked alike
        with pytest.raises(ValidationError, match="AUTH_END_SESSION_ENDPOINT"):
            AuthSettings(end_session_endpoint=endpoint)


@pytest.mark.parametrize(
    ("given", "same"),
    [
        ("http://127.0.0.1:9/callback", True),
        ("http://127.0.0.1:54321/callback", True),
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:65535/callback", True),
        ("http://127.0.0.1:65536/callback", False),
        ("http://127.0.0.1:/callback", False),
        ("http://127.0.0.1:0/callback", False),
        ("http://127.0.0.1:05/callback", False),
        ("HTTP://127.0.0.1:5/callback", False),
        ("http://127.0.0.1:5/callback#x", False),
        ("http://127.0.0.1:5/callback?", False),
        ("http://127.0.0.1:5/call\tback", False),
        ("http://127.0.0.1:5/Callback", False),
        ("http://127.0.0.1.evil.example:5/callback", False),
        ("http://u@127.0.0.1:5/callback", False),
        ("http://[::1]:5/callback", False),  # another host
        ("http://[x/callback", False),  # not even a URL
    ],
)
def test_a_loopback_redirect_uri_differs_in_its_port_alone(given: str, same: bool) -> None:
    assert registered("http://127.0.0.1:9/callback", given) is same
    assert registered("https://app.example/cb", given.replace("http://127.0.0.1:9", "")) is False


@pytest.mark.parametrize(
    ("secret", "redirect_uri", "remembered"),
    [
        (None, "https://app.example/cb", True),  # only the application's site gets it
        ("0" * 64, "http://127.0.0.1:9/cb", True),  # useless without the secret
        ("0" * 64, "com.example.app:/cb", True),
        (None, "http://127.0.0.1:9/cb", False),  # any program may hold the port
        (None, "http://localhost:9/cb", False),
        (None, "com.example.app:/cb", False),  # or claim the scheme
    ],
)
def test_an_earlier_yes_stands_only_where_the_answer_reaches_the_application_alone(
    secret: str | None, redirect_uri: str, remembered: bool
) -> None:
    """RFC 8252 §8.6: a public native client's redirect can be taken by another program."""
    app = AuthSettings(
        oauth_clients=[client(redirect_uris=[redirect_uri], secret_sha256=secret)]
    ).oauth_clients[0]
    assert assured(app, redirect_uri) is remembered
