from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.http import CorsOrigins
from common.verification import TokenCheckSettings


class FilmsSettings(TokenCheckSettings):
    model_config = SettingsConfigDict(env_prefix="FILMS_", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    # Processes serving HTTP in this instance (uvicorn workers).
    workers: int = Field(default=1, ge=1, le=64)
    port: int = 8001
    database_url: str = "sqlite+aiosqlite:///var/films.db"
    max_body_bytes: int = 64 * 1024
    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example.com"].
    cors_origins: CorsOrigins = Field(default_factory=list)
    # The consumer group reading auth.user-events (a deleted user's favourites go).
    group_id: str = "films"
    # The response cache of catalogue reads (films_service.cache): how long an entry lives
    # (0 turns the cache off), how often each process checks for writes made elsewhere,
    # and how many bytes of responses it keeps.
    cache_seconds: float = Field(default=60.0, ge=0, le=86_400)
    cache_check_seconds: float = Field(default=1.0, gt=0, le=60)
    cache_bytes: int = Field(default=8 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024)
