from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from common.verification import TokenCheckSettings

MIN_HISTORY_DAYS = 14


class MailerSettings(TokenCheckSettings):
    """The mailer's settings; the token-checking ones (for GET /v1/deliveries, checked
    offline as films does) come from TokenCheckSettings."""

    model_config = SettingsConfigDict(env_prefix="MAILER_", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    # Processes serving HTTP in this instance (uvicorn workers).
    workers: int = Field(default=1, ge=1, le=64)
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
    # Connections, hence sends in flight: after a crash at most this many emails can repeat.
    smtp_connections: int = Field(default=4, ge=1, le=64)

    sender: str = Field(default="Auth <no-reply@localhost>", alias="MAILER_FROM")
    product_name: str = "Films"

    batch_size: int = Field(default=500, ge=1, le=5000)
    fetch_max_wait_ms: int = Field(default=25, ge=1, le=5000)

    # A transient failure waits in delay topic auth.email-codes.retry.N, N = min(attempt - 1,
    # len(delays) - 1), for that tier's delay (80-100 %, jittered) while other mail flows.
    # Defaults: 1 + 5 + 25 s before the fourth attempt, then every 60 s; 8 attempts ≈ 4.5 min.
    max_attempts: int = Field(default=8, ge=1)
    retry_delays_seconds: list[float] = Field(default=[1.0, 5.0, 25.0, 60.0], min_length=1)
    # Housekeeping (housekeeping.py): a pass every this many seconds (0: none); finished
    # deliveries, with their attempts, go after this many days unchanged (0: kept). They are
    # also the record of emails already sent, so the history must outlast the topics'
    # retention (Kafka's default: 7 days): MIN_HISTORY_DAYS at least.
    housekeeping_seconds: float = Field(default=3600.0, ge=0)
    history_days: int = Field(default=90, ge=0)

    @field_validator("history_days")
    @classmethod
    def _outlasts_the_topics(cls, days: int) -> int:
        if 0 < days < MIN_HISTORY_DAYS:
            raise ValueError(
                f"MAILER_HISTORY_DAYS must be 0 (kept for good) or at least {MIN_HISTORY_DAYS}: "
                "the history is also the record of the emails already sent, and must outlast "
                "the topics' retention, or a re-read topic would send them again"
            )
        return days
