"""Loading and generating the RS256 key pair and the code HMAC secret."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.config import AuthSettings
from common.clock import utcnow
from common.jwt import TokenVerifier, load_public_key, public_jwk

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


def load_retired_code_secrets(settings: AuthSettings) -> list[bytes]:
    """Earlier code secrets still accepted, newest first: AUTH_RETIRED_CODE_SECRETS
    (comma-separated, each exactly as it was given as AUTH_CODE_SECRET), else the file (one
    a line, each read as the code secret's file is: surrounding blanks dropped); none if
    it is absent."""
    if settings.retired_code_secrets is not None:
        listed = settings.retired_code_secrets.get_secret_value().split(",")
        return [s.encode() for s in listed if s]
    try:
        return _retired_lines(settings.retired_code_secrets_path.read_bytes())
    except FileNotFoundError:
        return []


def _retired_lines(content: bytes) -> list[bytes]:
    return [line.strip() for line in content.splitlines() if line.strip()]


def rotate_code_secret(settings: AuthSettings) -> None:
    """A new code secret in its file; the old one first in the retired file, so codes,
    recovery codes and authenticator apps made under it keep working."""
    if settings.code_secret is not None or settings.retired_code_secrets is not None:
        raise SystemExit(
            "the code secrets come from the environment (AUTH_CODE_SECRET, "
            "AUTH_RETIRED_CODE_SECRETS): rotate them there"
        )
    retired = [load_code_secret(settings), *load_retired_code_secrets(settings)]
    content = b"\n".join(retired) + b"\n"
    if _retired_lines(content) != retired:  # a line break inside a secret (binary)
        raise SystemExit(
            f"the code secret in {settings.code_secret_path} cannot be kept one a line: "
            "retire it by hand, through AUTH_CODE_SECRET and AUTH_RETIRED_CODE_SECRETS"
        )
    # Retired first: an instance that reads the new secret always finds the old one kept.
    _write_atomically(settings.retired_code_secrets_path, content, 0o600)
    _write_atomically(settings.code_secret_path, secrets.token_hex(32).encode(), 0o600)


# Values that appear in examples and tutorials: never a production secret.
PLACEHOLDER_SECRETS = {b"secret", b"changeme", b"change-me", b"dev", b"development", b"test"}
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048


def check_production(
    settings: AuthSettings,
    code_secret: bytes,
    private_key: rsa.RSAPrivateKey,
    retired_code_secrets: Sequence[bytes] = (),
) -> None:
    """In AUTH_ENV=production, refuse what is fine on a laptop and wrong on a server."""
    problems = []
    named = [("the code secret", code_secret)]
    named += [("a retired code secret", s) for s in retired_code_secrets]
    for which, secret in named:
        if len(secret) < MIN_SECRET_BYTES or secret.lower() in PLACEHOLDER_SECRETS:
            problems.append(
                f"{which} is a development value (use at least {MIN_SECRET_BYTES} random "
                "bytes, e.g. from `python -m auth_service keys generate`)"
            )
    path = settings.private_key_path
    if path.stat().st_mode & 0o077:
        problems.append(f"{path} is readable by other users (chmod 600 {path})")
    if private_key.key_size < MIN_RSA_BITS:
        problems.append(f"{path} is shorter than {MIN_RSA_BITS} bits")
    if problems:
        raise SystemExit("refusing to start in production: " + "; ".join(problems))


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def rotate(settings: AuthSettings) -> tuple[str, str]:
    """Retire the signing key (its public half stays published) and make a new one.
    Returns (old kid, new kid)."""
    old = load_public_key(settings.public_key_path)
    old_jwk = public_jwk(old)
    retired = settings.retired_keys_dir
    retired.mkdir(parents=True, exist_ok=True)
    record = {"retired_at": utcnow().isoformat(), "jwk": old_jwk}
    (retired / f"{old_jwk['kid']}.json").write_text(json.dumps(record))
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    # Public first: a reader that sees the new private key always finds its public half.
    _write_atomically(
        settings.public_key_path,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    _write_atomically(
        settings.private_key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _prune_retired(settings)
    return old_jwk["kid"], public_jwk(key.public_key())["kid"]


def _retention(settings: AuthSettings) -> timedelta:
    # Long enough for every token the key signed to expire, with the verifiers' leeway.
    return timedelta(seconds=settings.access_token_ttl_seconds + 60)


def _retired(settings: AuthSettings) -> list[tuple[Path, dict[str, Any], bool]]:
    """(file, public JWK, still live) for each retired key: live while a token it signed
    may still be unexpired."""
    now = utcnow()
    records = []
    for path in sorted(settings.retired_keys_dir.glob("*.json")):
        record = json.loads(path.read_text())
        live = datetime.fromisoformat(record["retired_at"]) + _retention(settings) > now
        records.append((path, record["jwk"], live))
    return records


def _live_retired(settings: AuthSettings) -> list[dict[str, Any]]:
    return [jwk for _, jwk, live in _retired(settings) if live]


def _prune_retired(settings: AuthSettings) -> None:
    for path, _, live in _retired(settings):
        if not live:
            path.unlink(missing_ok=True)


class KeyRing:
    """The signing key, the public keys to publish, and the code secret.

    Re-reads the key files when the signing key changes on disk (`keys rotate`), checking
    at most every RELOAD_SECONDS, so running instances pick up a rotation without restart.
    """

    RELOAD_SECONDS = 5.0

    def __init__(self, settings: AuthSettings) -> None:
        if not settings.production:
            for path in generate_missing(settings):
                log.warning("development mode: generated %s", path)
        self._settings = settings
        self.code_secret = load_code_secret(settings)
        self.retired_code_secrets = load_retired_code_secrets(settings)
        self._checked = 0.0
        self._mtime = 0.0
        self._load()
        if settings.production:
            check_production(
                settings, self.code_secret, self.private_key, self.retired_code_secrets
            )

    def _load(self) -> None:
        s = self._settings
        self._mtime = s.private_key_path.stat().st_mtime
        private_key = load_private_key(s.private_key_path)
        public_key = load_public_key(s.public_key_path)
        if private_key.public_key().public_numbers() != public_key.public_numbers():
            raise SystemExit(f"{s.public_key_path} is not the public half of {s.private_key_path}")
        current = public_jwk(public_key)
        retired = [j for j in _live_retired(s) if j["kid"] != current["kid"]]
        self.private_key, self.kid = private_key, current["kid"]
        self.jwks = [current, *retired]
        keys = {current["kid"]: public_key}
        keys.update({j["kid"]: jwt.PyJWK(j).key for j in retired})
        self.verifier = TokenVerifier(keys, issuer=s.token_issuer, audience=s.token_audience)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.RELOAD_SECONDS:
            return
        self._checked = now
        try:
            changed = self._settings.private_key_path.stat().st_mtime != self._mtime
            if changed or any(self._expired_retired()):
                self._load()
                log.info("key ring reloaded; signing with kid %s", self.kid)
        except (OSError, ValueError, SystemExit) as exc:
            # Keep serving with the keys we have rather than fail every request.
            log.error("could not reload keys, keeping the current ones: %s", exc)

    def _expired_retired(self) -> list[str]:
        live = {j["kid"] for j in _live_retired(self._settings)}
        return [j["kid"] for j in self.jwks[1:] if j["kid"] not in live]

    def verify(self, token: str) -> dict[str, Any]:
        self.refresh()
        return self.verifier.verify(token)

    def signed(self, token: str) -> dict[str, Any]:
        """An ID token hint's claims (TokenVerifier.signed)."""
        self.refresh()
        return self.verifier.signed(token)

    async def refresh_unknown(self) -> bool:
        return False  # verify() already re-reads the key files every RELOAD_SECONDS
