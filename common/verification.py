"""How a service holding only public keys (films, the mailer) checks access tokens: with a
PEM file, or with auth's JWKS fetched and cached. Built here once, so every such service
behaves the same: a missing PEM fails at start-up, and in JWKS mode `/readyz` reports
`keys: down` until the first key set has arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from common.health import Check
from common.jwks import JwksVerifier
from common.jwt import TokenVerifier, Verifier, load_public_key


class TokenCheckSettings(BaseSettings):
    """The token-checking fields of a service's settings (each class adds its env prefix)."""

    public_key_path: Path = Path("keys/public.pem")
    # When set, keys come from auth's JWKS (cached) instead of public_key_path.
    jwks_url: str | None = None
    jwks_cooldown_seconds: float = Field(default=30.0, ge=0)
    jwks_refresh_seconds: float = Field(default=300.0, ge=1)
    token_issuer: str = "http://localhost:8000"
    token_audience: str = "api"
    # Admin routes only for a session that passed two-step sign-in (`"mfa"` in `amr`).
    admin_requires_mfa: bool = False
    # Access tokens must say `typ` at+jwt (RFC 9068 §4): only once auth has typed them so
    # (AUTH_ACCESS_TOKEN_TYPE) for longer than one lives.
    require_at_jwt: bool = False
    # Where clients reach this service, e.g. https://api.example.com: the base of the URL
    # a DPoP proof must name (its `htu`). Unset, the address each request came to.
    public_url: str | None = None


@dataclass
class OfflineVerification:
    verifier: Verifier
    jwks: JwksVerifier | None = None

    @classmethod
    def from_settings(cls, settings: TokenCheckSettings) -> OfflineVerification:
        if settings.jwks_url:
            jwks = JwksVerifier(
                settings.jwks_url,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                cooldown_seconds=settings.jwks_cooldown_seconds,
                refresh_seconds=settings.jwks_refresh_seconds,
                require_at_jwt=settings.require_at_jwt,
            )
            return cls(jwks, jwks)
        # Parsed now, before serving: a missing or wrong key file stops the start-up.
        key = load_public_key(settings.public_key_path)
        verifier = TokenVerifier.from_public_key(
            key,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            require_at_jwt=settings.require_at_jwt,
        )
        return cls(verifier)

    async def start(self) -> None:
        if self.jwks is not None:
            await self.jwks.start()

    async def stop(self) -> None:
        if self.jwks is not None:
            await self.jwks.stop()

    def checks(self) -> dict[str, Check]:
        """Readiness checks: in JWKS mode, whether a key set has been fetched."""
        jwks = self.jwks
        if jwks is None:
            return {}

        async def keys_loaded() -> bool:
            return jwks.ready

        return {"keys": keys_loaded}
