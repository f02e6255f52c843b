from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from auth_service.config import AuthSettings
from auth_service.keys import KeyRing, generate_missing, rotate
from common.clock import utcnow


def settings_in(directory: Path) -> AuthSettings:
    return AuthSettings(
        private_key_path=directory / "private.pem",
        public_key_path=directory / "public.pem",
        code_secret_path=directory / "code_secret",
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
