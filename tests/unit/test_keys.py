from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from auth_service.config import AuthSettings
from auth_service.keys import (
    KeyRing,
    generate_missing,
    load_retired_code_secrets,
    rotate,
    rotate_code_secret,
)
from common.clock import utcnow


def settings_in(directory: Path) -> AuthSettings:
    return AuthSettings(
        private_key_path=directory / "private.pem",
        public_key_path=directory / "public.pem",
        code_secret_path=directory / "code_secret",
        retired_code_secrets_path=directory / "retired_code_secrets",
        retired_keys_dir=directory / "retired",
    )


def test_generate_never_overwrites(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert len(generate_missing(settings)) == 3
    before = settings.private_key_path.read_bytes()
    assert generate_missing(settings) == []
    assert settings.private_key_path.read_bytes() == before


def test_retired_keys_leave_the_jwks_once_their_tokens_expired(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    generate_missing(settings)
    old, new = rotate(settings)
    ring = KeyRing(settings)
    assert [k["kid"] for k in ring.jwks] == [new, old]

    # Pretend the rotation happened longer ago than a token lives.
    record_path = settings.retired_keys_dir / f"{old}.json"
    record = json.loads(record_path.read_text())
    record["retired_at"] = (utcnow() - timedelta(seconds=900 + 61)).isoformat()
    record_path.write_text(json.dumps(record))
    assert [k["kid"] for k in KeyRing(settings).jwks] == [new]

    # The next rotation prunes the expired record from disk.
    rotate(settings)
    assert not record_path.exists()


def test_production_never_generates_missing_keys(tmp_path: Path) -> None:
    settings = settings_in(tmp_path).model_copy(update={"env": "production"})
    with pytest.raises(SystemExit, match="not found: run `python -m auth_service keys generate`"):
        KeyRing(settings)
    assert not settings.private_key_path.exists()


def test_production_accepts_generated_keys(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    generate_missing(settings)
    KeyRing(settings.model_copy(update={"env": "production"}))


@pytest.mark.parametrize("secret", ["secret", "changeme", "x" * 31])
def test_production_refuses_a_development_secret(tmp_path: Path, secret: str) -> None:
    settings = settings_in(tmp_path)
    generate_missing(settings)
    production = settings.model_copy(update={"env": "production", "code_secret": SecretStr(secret)})
    with pytest.raises(SystemExit, match="code secret is a development value"):
        KeyRing(production)
    KeyRing(production.model_copy(update={"env": "development"}))  # fine on a laptop


def test_production_refuses_a_private_key_others_can_read(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    generate_missing(settings)
    settings.private_key_path.chmod(0o644)
    with pytest.raises(SystemExit, match="readable by other users"):
        KeyRing(settings.model_copy(update={"env": "production"}))


def test_a_rotated_code_secret_reads_back_exactly(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    settings.code_secret_path.write_bytes(b"first secret, with a comma, of 32+ bytes\n")
    rotate_code_secret(settings)
    second = settings.code_secret_path.read_bytes()
    rotate_code_secret(settings)
    ring = KeyRing(settings)
    assert ring.retired_code_secrets == [second, b"first secret, with a comma, of 32+ bytes"]
    assert ring.code_secret not in ring.retired_code_secrets


def test_a_code_secret_a_line_cannot_hold_is_not_rotated(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    binary = b"\x8f\x00binary\nsecret" + bytes(range(200, 232))
    settings.code_secret_path.write_bytes(binary)
    with pytest.raises(SystemExit, match="cannot be kept one a line"):
        rotate_code_secret(settings)
    assert settings.code_secret_path.read_bytes() == binary  # nothing changed
    assert not settings.retired_code_secrets_path.exists()


def test_retired_code_secrets_from_the_environment_are_taken_as_given() -> None:
    """As AUTH_CODE_SECRET is: a trailing newline (a mounted secret) stays part of it."""
    settings = AuthSettings(retired_code_secrets=SecretStr("second\n,first"))
    assert load_retired_code_secrets(settings) == [b"second\n", b"first"]


def test_production_refuses_a_development_retired_secret(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    generate_missing(settings)
    production = settings.model_copy(
        update={"env": "production", "retired_code_secrets": SecretStr("x" * 40 + ",changeme")}
    )
    with pytest.raises(SystemExit, match="a retired code secret is a development value"):
        KeyRing(production)
