"""Loading and generating the RS256 key pair and the code HMAC secret."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.config import AuthSettings
from common.jwt import load_public_key

log = logging.getLogger(__name__)

RSA_BITS = 2048


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_missing(settings: AuthSettings) -> list[Path]:
    """Create whatever key material is missing; never overwrite. Returns what was made."""
    made: list[Path] = []
    if not settings.private_key_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        _write_private(
            settings.private_key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        made.append(settings.private_key_path)
        settings.public_key_path.unlink(missing_ok=True)
    if not settings.public_key_path.exists():
        private = load_private_key(settings.private_key_path)
        settings.public_key_path.parent.mkdir(parents=True, exist_ok=True)
        settings.public_key_path.write_bytes(
            private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        made.append(settings.public_key_path)
    if settings.code_secret is None and not settings.code_secret_path.exists():
        _write_private(settings.code_secret_path, secrets.token_hex(32).encode())
        made.append(settings.code_secret_path)
    return made


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise SystemExit(
            f"private key {path} not found: run `python -m auth_service keys generate` "
            "or set AUTH_PRIVATE_KEY_PATH"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SystemExit(f"{path} is not an RSA private key")
    return key


def load_code_secret(settings: AuthSettings) -> bytes:
    if settings.code_secret is not None:
        return settings.code_secret.get_secret_value().encode()
    try:
        return settings.code_secret_path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise SystemExit(
            f"code secret {settings.code_secret_path} not found: run "
            "`python -m auth_service keys generate` or set AUTH_CODE_SECRET"
        ) from exc


class KeyMaterial:
    """The signing key, the public keys to publish, and the code secret."""

    def __init__(self, settings: AuthSettings) -> None:
        if not settings.production:
            for path in generate_missing(settings):
                log.warning("development mode: generated %s", path)
        self.private_key = load_private_key(settings.private_key_path)
        self.public_key = load_public_key(settings.public_key_path)
        if self.private_key.public_key().public_numbers() != self.public_key.public_numbers():
            raise SystemExit(
                f"{settings.public_key_path} is not the public half of {settings.private_key_path}"
            )
        self.code_secret = load_code_secret(settings)
