"""New passwords are checked against the most common leaked ones and against the account's
own address (NIST SP 800-63B 5.1.1.2: refuse values known to be commonly used, expected or
compromised, and context-specific words such as the username). Logins are not: a user who
has such a password still signs in, and is refused it only when choosing a new one.

The list (`data/common_passwords.txt`, 11,611 passwords) is kept as a sorted array of
64-bit BLAKE2b digests: a tenth of the memory of a set of the strings, looked up by
bisection. Both sides are NFKC-normalised and case-folded: `PASSWORD1` is `password1`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from array import array
from bisect import bisect_left
from importlib import resources


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(_fold(text).encode(), digest_size=8).digest())


def _load() -> array[int]:
    text = resources.files("auth_service").joinpath("data/common_passwords.txt").read_text()
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return array("Q", sorted({_digest(line) for line in lines}))


_COMMON = _load()


def is_common(password: str) -> bool:
    key = _digest(password)
    at = bisect_left(_COMMON, key)
    return at < len(_COMMON) and _COMMON[at] == key


def is_address(password: str, email: str) -> bool:
    """The address itself, or its local part (`ann.lee@…` for `ann.lee`)."""
    folded, address = _fold(password), _fold(email)
    return folded in (address, address.rpartition("@")[0])
