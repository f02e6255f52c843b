from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MailerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILER_")

    host: str = "127.0.0.1"
    port: int = 8002
    database_url: str = "sqlite+aiosqlite:///var/mailer.db"
    group_id: str = "mailer"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_tls_verify: bool = True
    smtp_ca_file: Path | None = None
    # Well below the consumer's max poll interval (5 min), so a stuck server cannot stall the group.
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_connections: int = Field(default=2, ge=1, le=32)

    sender: str = Field(default="Auth <no-reply@localhost>", alias="MAILER_FROM")
    product_name: str = "Films"

    # 8 attempts back off for at least ~31 s in all (jitter included): a 20 s outage passes.
    max_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
