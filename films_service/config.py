from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FilmsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILMS_")

    host: str = "127.0.0.1"
    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///var/films.db"
    public_key_path: Path = Path("keys/public.pem")
    # When set, keys come from auth's JWKS (cached) instead of public_key_path.
    jwks_url: str | None = None
    jwks_cooldown_seconds: float = Field(default=30.0, ge=0)
    jwks_refresh_seconds: float = Field(default=300.0, ge=1)
    token_issuer: str = "http://localhost:8000"
    token_audience: str = "api"
    max_body_bytes: int = 64 * 1024
