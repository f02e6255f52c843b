from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.settings import comma_separated


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEB_", hide_input_in_errors=True)

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8003
    database_url: str = "sqlite+aiosqlite:///var/web.db"

    # Where the APIs are, as this process reaches them (not as browsers would).
    auth_url: str = "http://127.0.0.1:8000"
    films_url: str = "http://127.0.0.1:8001"
    mailer_url: str = "http://127.0.0.1:8002"
    api_timeout_seconds: float = Field(default=10.0, gt=0)
    # The address calls to the APIs leave from (e.g. 127.0.0.10): one auth can name in
    # AUTH_TRUSTED_PROXIES to believe the browser's address this service forwards, while
    # other local processes, on other addresses, are not believed. Unset: the system picks.
    source_address: str | None = None

    # Encrypts the tokens kept in the session store (Fernet). One key per line: the first
    # encrypts, every one decrypts, so a key can be rotated without logging everyone out.
    session_key_path: Path = Path("keys/web_session_key")
    # A session ends after this long without a request, and at the latest after the max.
    session_idle_seconds: int = Field(default=24 * 3600, ge=60)
    session_max_seconds: int = Field(default=14 * 24 * 3600, ge=300)

    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or CIDRs,
    # comma-separated): the gateway. From anyone else they are ignored, so a browser cannot
    # choose the address auth rate-limits it by, nor claim https.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The origin browsers use (e.g. https://films.example.com). Unset, a form post's Origin
    # must match the Host it was sent to; set, it must be this.
    public_origin: str | None = None

    # What the "send again" button waits for; keep equal to AUTH_RESEND_COOLDOWN_SECONDS.
    resend_cooldown_seconds: int = Field(default=60, ge=0)
    max_body_bytes: int = 64 * 1024
    # Processes serving HTTP in this instance (uvicorn workers); sessions live in the
    # database, so any worker or instance serves any browser.
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return comma_separated(value)

    @property
    def production(self) -> bool:
        return self.env == "production"
