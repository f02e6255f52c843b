from __future__ import annotations

import uuid

import pytest

from auth_service.codes import CodeHasher, new_code


def test_codes_are_six_digits_and_spread_out() -> None:
    codes = [new_code() for _ in range(2000)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(set(codes)) > 1900  # birthday bound for 2000 draws from 10^6 is ~2 clashes
    assert any(c.startswith("0") for c in codes)  # leading zeros are kept


def test_digest_is_bound_to_account_and_purpose() -> None:
    hasher = CodeHasher(b"k" * 32)
    user, other = uuid.uuid4(), uuid.uuid4()
    stored = hasher.digest(user, "email_verification", "123456")
    assert "123456" not in stored
    assert hasher.matches(stored, user, "email_verification", "123456")
    assert not hasher.matches(stored, user, "email_verification", "123457")
    assert not hasher.matches(stored, other, "email_verification", "123456")
    assert not hasher.matches(stored, user, "password_reset", "123456")


def test_digest_depends_on_the_server_secret() -> None:
    user = uuid.uuid4()
    a = CodeHasher(b"a" * 32).digest(user, "p", "123456")
    b = CodeHasher(b"b" * 32).digest(user, "p", "123456")
    assert a != b


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        CodeHasher(b"short")


def test_codes_stored_under_a_retired_secret_still_match() -> None:
    user = uuid.uuid4()
    stored = CodeHasher(b"a" * 32).digest(user, "p", "123456")
    rotated = CodeHasher(b"b" * 32, retired=[b"a" * 32])
    assert rotated.matches(stored, user, "p", "123456")
    assert not rotated.matches(stored, user, "p", "123457")
    assert rotated.digest(user, "p", "123456") == CodeHasher(b"b" * 32).digest(user, "p", "123456")
    assert rotated.digests(user, "p", "123456")[1] == stored
    assert not CodeHasher(b"b" * 32).matches(stored, user, "p", "123456")
    with pytest.raises(ValueError):
        CodeHasher(b"b" * 32, retired=[b"short"])
