"""Two-step sign-in's parts: RFC 6238's codes, the window and replay rule, the sealed
secret, recovery codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.exceptions import InvalidTag

from auth_service.totp import (
    SecretBox,
    code_at,
    matching_step,
    new_recovery_codes,
    normalize_recovery_code,
    otpauth_uri,
    step_at,
)

RFC_SECRET = b"12345678901234567890"  # RFC 6238 appendix B, SHA-1


@pytest.mark.parametrize(
    ("unix", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
    ],
)
def test_the_rfc_6238_vectors(unix: int, eight_digits: str) -> None:
    when = datetime.fromtimestamp(unix, UTC)
    assert code_at(RFC_SECRET, step_at(when)) == eight_digits[-6:]


def test_one_step_either_side_and_never_a_step_twice() -> None:
    now = datetime.fromtimestamp(1234567890, UTC)
    step = step_at(now)
    for offset in (-1, 0, 1):
        assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step + offset), now, None) == (
            step + offset
        )
    for offset in (-3, -2, 2, 3):
        assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step + offset), now, None) is None
    # A step already accepted, or one before it, is refused.
    assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step), now, step) is None
    assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step - 1), now, step) is None
    assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step + 1), now, step) == step + 1
    later = now + timedelta(seconds=30)
    assert matching_step(RFC_SECRET, code_at(RFC_SECRET, step + 1), later, step) == step + 1


def test_a_sealed_secret_opens_only_for_its_account_and_key() -> None:
    box, other_key = SecretBox(b"k" * 32), SecretBox(b"j" * 32)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sealed = box.seal(RFC_SECRET, alice)
    assert box.open(sealed, alice) == (RFC_SECRET, True)
    assert box.seal(RFC_SECRET, alice) != sealed  # a fresh nonce each time
    with pytest.raises(InvalidTag):
        box.open(sealed, bob)
    with pytest.raises(InvalidTag):
        other_key.open(sealed, alice)


def test_a_secret_sealed_under_a_retired_key_opens_and_says_so() -> None:
    old, new = SecretBox(b"k" * 32), SecretBox(b"j" * 32, retired=[b"k" * 32])
    alice = uuid.uuid4()
    assert new.open(old.seal(RFC_SECRET, alice), alice) == (RFC_SECRET, False)
    assert new.open(new.seal(RFC_SECRET, alice), alice) == (RFC_SECRET, True)
    with pytest.raises(InvalidTag):  # the new key is not the old box's
        old.open(new.seal(RFC_SECRET, alice), alice)


def test_recovery_codes() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        assert not set(code.replace("-", "")) & set("0o1li")
    assert normalize_recovery_code(" ABCDE-fghjk ") == normalize_recovery_code("abcde fghjk")
    assert normalize_recovery_code("ABCDE-FGHJK") == "abcdefghjk"


def test_the_otpauth_uri() -> None:
    uri = urlsplit(otpauth_uri(RFC_SECRET, "ann+x@example.com", "Films Auth"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert uri.path == "/Films%20Auth:ann%2Bx@example.com"
    query = parse_qs(uri.query)
    assert query["secret"] == ["GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"]
    assert query["issuer"] == ["Films Auth"]
    assert (query["digits"], query["period"], query["algorithm"]) == (["6"], ["30"], ["SHA1"])
