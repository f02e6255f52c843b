from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auth_service.client_assertions import signing_keys
from common.http import CorsOrigins
from common.settings import comma_separated


def web_origin(url: str) -> str | None:
    """The origin a browser would name for `url` (scheme, host and port, as it serialises
    them: lower case, no default port), or None for what is not a web URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return None
    if parts.query or parts.fragment:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


LOOPBACK = ("localhost", "127.0.0.1", "::1")
SERVER_URIS = {"backchannel_logout_uri": "back-channel logout URI", "jwks_uri": "JWKS URI"}


# What an application may be granted: an ID token, the address in it, the films API.
Scope = Literal["openid", "email", "films"]
# What a client's own token may be granted: the scopes about a person are not a service's.
SERVICE_SCOPES: tuple[Scope, ...] = ("films",)


def _uuid_like(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


class OAuthClient(BaseModel):
    """An application that sends people here to sign in (OAuth 2.0's authorization code
    with PKCE, oauth.py), and gets their tokens back at one of its `redirect_uris`; or a
    service, which signs nobody in: it asks auth whether a token is live (RFC 7662,
    `introspect`), or gets tokens of its own to call the APIs as itself (RFC 6749 §4.4,
    `client_credentials`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=r"^[A-Za-z0-9._~-]{1,128}$")
    name: str = Field(min_length=1, max_length=100)  # what the consent page calls it
    # Empty only for a service.
    redirect_uris: list[str] = Field(default_factory=list, max_length=20)
    # A confidential client (a server, which can keep a secret): the SHA-256 of its
    # secret, in hex; or, where it signs its requests with a private key instead
    # (`private_key_jwt`, client_assertions.py), its public keys as a JWK Set, given here
    # or where it publishes them (https, or http on this machine's loopback). None of
    # these: a public one (a single-page or native app), PKCE alone.
    secret_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = Field(default=None, max_length=2000)
    # First-party: signed-in people are sent back without being asked to allow it.
    trusted: bool = False
    # Where the web front end's logout page may send the browser back to, when the
    # application asks it to sign the person out (OpenID Connect RP-Initiated Logout).
    post_logout_redirect_uris: list[str] = Field(default_factory=list, max_length=20)
    # The scopes it may be granted (None: every one; see oauth.SCOPES); others it asks for
    # are left out, as unknown ones are.
    scopes: list[Scope] | None = None
    # Where auth tells it that one of its sessions ended, server to server (OpenID Connect
    # Back-Channel Logout): https, or http on this machine's loopback.
    backchannel_logout_uri: str | None = Field(default=None, max_length=2000)
    # May introspect access tokens (RFC 7662): a confidential client alone.
    introspect: bool = False
    # May get access tokens of its own (`sub` its client_id) for the scopes it may be
    # granted, beyond openid and email (RFC 6749 §4.4): a confidential client alone.
    client_credentials: bool = False
    # Sends its authorization requests to auth first (RFC 9126, pushed.py), and the
    # browser with their request_uri alone: one in the browser's address is refused.
    require_pushed_authorization_requests: bool = False
    # Gets access tokens bound to its key alone (RFC 9449 §5.2): the token endpoint
    # refuses its requests without a DPoP proof.
    dpop_bound_access_tokens: bool = False

    @model_validator(mode="after")
    def _signs_in_or_serves(self) -> OAuthClient:
        """A service (introspecting, or with tokens of its own) proves itself; one without
        redirect URIs is a service alone, and has nothing of an application's. A client
        with tokens of its own is never named like an account: its client_id is their
        `sub`, and an account's is a UUID."""
        name = f"client {self.client_id!r}"
        service = self.introspect or self.client_credentials
        ways = [self.secret_sha256, self.jwks, self.jwks_uri]
        if len([way for way in ways if way is not None]) > 1:
            raise ValueError(f"{name}: it proves itself one way, secret_sha256, jwks or jwks_uri")
        if service and not self.confidential:
            raise ValueError(
                f"{name}: introspect and client_credentials need a secret_sha256, jwks or jwks_uri"
            )
        if self.client_credentials and _uuid_like(self.client_id):
            raise ValueError(f"{name}: with client_credentials, a client_id is no UUID")
        may = SERVICE_SCOPES if self.scopes is None else self.scopes
        if self.client_credentials and not set(may) & set(SERVICE_SCOPES):
            raise ValueError(f"{name}: client_credentials, but no scope a service may get")
        if self.redirect_uris:
            return self
        if not service:
            raise ValueError(
                f"{name}: redirect_uris are needed, unless it introspects or has client_credentials"
            )
        signs_in = {
            "trusted",
            "post_logout_redirect_uris",
            "backchannel_logout_uri",
            "require_pushed_authorization_requests",
        }
        if not self.client_credentials:
            signs_in.add("scopes")  # nothing is granted to it
        if given := sorted(signs_in & self.model_fields_set):
            raise ValueError(f"{name}: a service (no redirect_uris) has no {given}")
        return self

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, client_id: str) -> str:
        """Not dots alone: it names a path segment (`/v1/auth/oauth/consents/{client_id}`),
        where "." and ".." mean something else."""
        if not client_id.strip("."):
            raise ValueError("a client_id is not dots alone")
        return client_id

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, jwks: dict[str, Any] | None) -> dict[str, Any] | None:
        if jwks is not None:
            signing_keys(jwks)  # ValueError, naming what is wrong
        return jwks

    @property
    def confidential(self) -> bool:
        """Whether it proves itself (a secret, or a key): a server, not a browser's or a
        device's app."""
        return self.secret_sha256 is not None or self.signs

    @property
    def signs(self) -> bool:
        """Whether it proves itself with assertions signed with its keys (private_key_jwt)."""
        return self.jwks is not None or self.jwks_uri is not None

    @field_validator("backchannel_logout_uri", "jwks_uri")
    @classmethod
    def _server_uri(cls, uri: str | None, info: ValidationInfo) -> str | None:
        """An address auth calls: https, or http on this machine's loopback; no fragment
        (nor, for keys it fetches, a user and password, which the logs would show)."""
        parts = urlsplit(uri or "https://x")
        scheme = parts.scheme.lower()
        web = scheme == "https" or (scheme == "http" and parts.hostname in LOOPBACK)
        named = info.field_name == "jwks_uri" and parts.username is not None
        if not web or not parts.hostname or parts.fragment or named:
            what = SERVER_URIS[info.field_name or ""]
            raise ValueError(f"{uri!r} is not a {what}: https, no fragment")
        return uri

    @field_validator("redirect_uris", "post_logout_redirect_uris")
    @classmethod
    def _redirect_uris(cls, uris: list[str]) -> list[str]:
        """Absolute, no fragment (RFC 6749 §3.1.2); https, or http on this machine's
        loopback (a development server, a native app's local listener), or a native app's
        own scheme, named as a reversed domain (RFC 8252 §7.1)."""
        for uri in uris:
            parts = urlsplit(uri)
            scheme = parts.scheme.lower()
            private = "." in scheme and not parts.netloc
            web = scheme == "https" or (scheme == "http" and parts.hostname in LOOPBACK)
            if len(uri) > 2000 or parts.fragment or not (private or (web and parts.hostname)):
                raise ValueError(
                    f"{uri!r} is not a redirect URI: absolute, without a fragment, https (or "
                    "http on localhost) or a reversed-domain scheme (com.example.app:/cb)"
                )
        return uris


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", hide_input_in_errors=True)

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///var/auth.db"

    private_key_path: Path = Path("keys/private.pem")
    public_key_path: Path = Path("keys/public.pem")
    # Public halves of rotated keys, published until their tokens have expired.
    retired_keys_dir: Path = Path("keys/retired")
    # The HMAC key codes are stored under: given directly, or read from a file.
    code_secret: SecretStr | None = None
    code_secret_path: Path = Path("keys/code_secret")
    # Earlier code secrets, still accepted: codes and recovery codes stored under them
    # match, and authenticator apps sealed under them open (and are sealed again under the
    # current one). Comma-separated here, or one a line in the file.
    retired_code_secrets: SecretStr | None = None
    retired_code_secrets_path: Path = Path("keys/retired_code_secrets")

    # Where clients reach auth, e.g. https://id.example.com: the base of the URLs in the
    # OpenID metadata. Unset, they are built from the address each request came to.
    public_url: str | None = None
    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example.com"].
    cors_origins: CorsOrigins = Field(default_factory=list)

    token_issuer: str = "http://localhost:8000"
    token_audience: str = "api"
    access_token_ttl_seconds: int = Field(default=900, ge=60)
    # The access tokens' `typ` header: PyJWT's JWT, which every JWT library takes, or RFC
    # 9068's at+jwt, for resource servers that check it (some refuse anything but JWT).
    access_token_type: Literal["JWT", "at+jwt"] = "JWT"
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=300)
    # Off by default: how long after its rotation a refresh token presented again gets
    # the family's next pair instead of ending it, while its successor is unused
    # (auth_service/refresh.py).
    refresh_reuse_grace_seconds: int = Field(default=0, ge=0, le=60)

    code_ttl_seconds: int = Field(default=600, ge=60)
    code_max_attempts: int = Field(default=5, ge=1)
    resend_cooldown_seconds: int = Field(default=60, ge=0)
    # Wrong codes per address across all its codes: a fresh code does not reset the budget.
    code_max_failures_per_address: int = Field(default=20, ge=1)
    code_failure_window_seconds: int = Field(default=24 * 3600, ge=60)

    # Two-step sign-in: how long the mfa_token a right password (or emailed code) hands
    # back may be traded for a session, and the issuer name authenticator apps show
    # (default: the host of AUTH_PUBLIC_URL, else of AUTH_TOKEN_ISSUER).
    mfa_challenge_seconds: int = Field(default=300, ge=30, le=1800)
    # The admin API only for a session that passed two-step sign-in (`"mfa"` in `amr`).
    admin_requires_mfa: bool = False
    totp_issuer: str | None = Field(default=None, min_length=1, max_length=64)
    # Passkeys (WebAuthn, passkeys.py): the web origins that may register and use them
    # (comma-separated; default the origin of AUTH_PUBLIC_URL, else of AUTH_TOKEN_ISSUER),
    # and the domain they are bound to (default the first origin's host), which every
    # origin's host must be or end in. A passkey works only under that domain.
    passkey_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    passkey_rp_id: str | None = Field(default=None, min_length=1, max_length=253)

    # Applications that send people here to sign in, and services that introspect tokens
    # or get their own, as JSON: [{"client_id", "name", "redirect_uris"?, ...}]
    # (OAuthClient), and the pages where they do, and where they sign them out (the web
    # front end's /oauth/authorize and /oauth/logout), for the OpenID metadata.
    oauth_clients: list[OAuthClient] = Field(default_factory=list)
    authorization_endpoint: str | None = Field(default=None, max_length=2000)
    end_session_endpoint: str | None = Field(default=None, max_length=2000)
    # What a client's signed assertion (private_key_jwt) may name as its audience: auth's
    # issuer alone (RFC 7523bis, which closes the audience-injection attack on clients
    # that sign for several servers), or also the URLs of the endpoints that take
    # assertions (routes/token.py's ASSERTED_AT) under AUTH_PUBLIC_URL, which older
    # client libraries send.
    client_assertion_audience: Literal["issuer", "issuer_and_endpoints"] = "issuer"
    # A client's keys at its jwks_uri are fetched again early for a kid not seen yet (a
    # rotation), at most this often.
    client_jwks_refetch_seconds: float = Field(default=30.0, ge=1.0, le=300.0)
    # How long a pushed authorization request's request_uri lasts (RFC 9126): the person
    # signs in on the way, and the web front end carries the request_uri through it.
    pushed_request_seconds: int = Field(default=600, ge=10, le=3600)

    # Progressive login lockout: from the 30th failure, 60 s more per failure, at most 15 min;
    # the count resets after 12 h without failures, or at a successful login.
    lockout_threshold: int = Field(default=30, ge=1)
    lockout_step_seconds: int = Field(default=60, ge=1)
    lockout_max_seconds: int = Field(default=15 * 60, ge=1)
    lockout_reset_seconds: int = Field(default=12 * 3600, ge=60)

    # OWASP's argon2id minimum is m=19 MiB, t=2, p=1.
    argon2_memory_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_parallelism: int = Field(default=1, ge=1)
    hash_workers: int = Field(default=0, ge=0, description="0 means one per CPU")

    # Sign-up, resend and forgot answer no sooner than this, whatever the address's state,
    # so their timing says nothing about which accounts exist. Above the slowest branch.
    enumeration_floor_ms: int = Field(default=120, ge=0)
    # A route's floor rises to its slowest answer of this long (auth_service/floors.py): a
    # lone probe after a quiet spell this long meets the configured floor again.
    enumeration_floor_memory_seconds: float = Field(default=600.0, ge=0)

    # A sign-up is answered once accepted and carried out right after; one not carried
    # out this long after it was accepted (its process stopped, or its database was away)
    # is carried out by the process relaying the outbox.
    signup_resume_after_seconds: float = Field(default=60.0, ge=4)

    rate_limit_enabled: bool = True
    # Overrides of the defaults in ratelimit.py, as JSON: {"ip:login": [30, 60], ...}.
    rate_limits: dict[str, tuple[int, float]] = Field(default_factory=dict)
    # Where rate-limit counters are shared by every instance and worker (redis://...);
    # unset, each process counts on its own.
    redis_url: str | None = None
    redis_key_prefix: str = "auth-limits"
    # Peers whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated): the
    # gateway. From anyone else the header is ignored and the socket's peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    # Fallback poll of the outbox (a commit wakes the relay at once).
    outbox_poll_seconds: float = Field(default=5.0, gt=0)
    # An email the mailer has not reported on for this long is published again (it may
    # have been lost with a broker); one unconfirmed for AUTH_OUTBOX_GIVE_UP_SECONDS is
    # closed as undelivered (logged, counted).
    outbox_republish_seconds: float = Field(default=300.0, gt=0)
    outbox_give_up_seconds: float = Field(default=3600.0, gt=0)
    # Housekeeping (housekeeping.py): a pass every this many seconds (0: none; `python -m
    # auth_service housekeep` runs one). Spent rows (ended sessions, expired tokens, used
    # codes, settled outbox rows, stale counters) go this long after they stopped counting;
    # never-verified accounts after this many quiet days; audit events after this many days
    # (0 keeps either for good).
    housekeeping_seconds: float = Field(default=3600.0, ge=0)
    retain_spent_hours: int = Field(default=24, ge=1)
    unverified_account_days: int = Field(default=7, ge=0)
    audit_retention_days: int = Field(default=365, ge=0)
    # Processes serving HTTP in this instance (uvicorn workers); more than one needs
    # AUTH_REDIS_URL for shared rate limits. The outbox relay runs in one of them.
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("trusted_proxies", "passkey_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return comma_separated(value)

    @model_validator(mode="after")
    def _passkeys_fit_their_domain(self) -> AuthSettings:
        for given in self.passkey_origins:
            if web_origin(given) is None or urlsplit(given).path not in ("", "/"):
                raise ValueError(f"AUTH_PASSKEY_ORIGINS: {given!r} is not a web origin")
        rp_id = self.passkey_rp
        for origin in self.passkey_origin_list:
            host = urlsplit(origin).hostname or ""
            if host != rp_id and not host.endswith("." + rp_id):
                raise ValueError(
                    f"AUTH_PASSKEY_RP_ID: {origin!r} is not on {rp_id!r} or a subdomain of it"
                )
        return self

    @model_validator(mode="after")
    def _clients_unique(self) -> AuthSettings:
        ids = [client.client_id for client in self.oauth_clients]
        if len(ids) != len(set(ids)):
            raise ValueError("AUTH_OAUTH_CLIENTS: a client_id is given twice")
        if self.token_audience in ids:  # its ID tokens would pass for access tokens
            raise ValueError("AUTH_OAUTH_CLIENTS: a client_id may not be AUTH_TOKEN_AUDIENCE")
        for name, url in (
            ("AUTH_AUTHORIZATION_ENDPOINT", self.authorization_endpoint),
            ("AUTH_END_SESSION_ENDPOINT", self.end_session_endpoint),
        ):
            parts = urlsplit(url or "https://x")
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
                raise ValueError(f"{name}: not a web URL")
        return self

    @model_validator(mode="after")
    def _endpoints_named(self) -> AuthSettings:
        """Endpoint URLs as audiences come from AUTH_PUBLIC_URL, never from a request's
        Host header, which a client chooses."""
        if self.client_assertion_audience != "issuer" and not self.public_url:
            raise ValueError(
                "AUTH_CLIENT_ASSERTION_AUDIENCE=issuer_and_endpoints needs AUTH_PUBLIC_URL"
            )
        return self

    @model_validator(mode="after")
    def _workers_share_limits(self) -> AuthSettings:
        if self.workers > 1 and self.rate_limit_enabled and not self.redis_url:
            raise ValueError(
                "AUTH_WORKERS > 1 needs AUTH_REDIS_URL, so the workers share their rate-limit "
                "counters (or set AUTH_RATE_LIMIT_ENABLED=false)"
            )
        return self

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def passkey_origin_list(self) -> list[str]:
        """Where passkeys may be used from, as a browser names its origin: none when
        neither they nor a URL to take them from are configured."""
        given = self.passkey_origins or [self.public_url or self.token_issuer]
        return [origin for origin in map(web_origin, given) if origin is not None]

    @property
    def passkey_rp(self) -> str:
        """The relying party's id: the domain every passkey is bound to."""
        if self.passkey_rp_id:
            return self.passkey_rp_id.lower()
        origins = self.passkey_origin_list
        return (urlsplit(origins[0]).hostname if origins else None) or "localhost"

    @property
    def totp_issuer_name(self) -> str:
        if self.totp_issuer:
            return self.totp_issuer
        return urlsplit(self.public_url or self.token_issuer).hostname or "auth"
