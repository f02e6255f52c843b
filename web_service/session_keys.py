"""The key that seals what the session store keeps (access and refresh tokens, the CSRF
secret): Fernet (AES-128-CBC + HMAC-SHA256), so a copy of the database alone reveals no
token. The key file holds one key per line; the first seals, every one opens, so a new key
can be put first and the old one dropped once the sessions it sealed have expired.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from web_service.config import WebSettings

__all__ = ["InvalidToken", "generate_missing", "load_sealer"]

log = logging.getLogger(__name__)


def generate_missing(path: Path) -> bool:
    """Create the key file if it is missing (never overwrite). True when made."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(Fernet.generate_key() + b"\n")
    return True


def load_sealer(settings: WebSettings) -> MultiFernet:
    """The keys, or SystemExit with the reason. Development makes a missing file;
    production refuses to start without one."""
    path = settings.session_key_path
    if not settings.production and generate_missing(path):
        log.warning("development mode: generated %s", path)
    try:
        lines = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    except FileNotFoundError as exc:
        raise SystemExit(
            f"session key {path} not found: run `python -m web_service keys generate` "
            "or set WEB_SESSION_KEY_PATH"
        ) from exc
    if settings.production and path.stat().st_mode & 0o077:
        raise SystemExit(f"refusing to start in production: {path} is readable by other users")
    try:
        keys = [Fernet(line) for line in lines]
    except ValueError as exc:
        raise SystemExit(f"{path}: every line must be a Fernet key ({exc})") from exc
    if not keys:
        raise SystemExit(f"{path} holds no key")
    return MultiFernet(keys)
