"""Request-field types shared by the services' schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


# Put after the length constraints, on `str` itself: `Annotated[str, StringConstraints(...),
# NoNul]`. Layered over a validator instead, pydantic would check the length before
# stripping, and "   " would pass a min_length of 1 as "".
NoNul = AfterValidator(_no_nul)


def _local_part_fits(value: str) -> str:
    if len(value.rpartition("@")[0].encode()) > 64:
        raise ValueError("the part before @ is over 64 octets")
    return value


# Lower-cased: one account per mailbox. RFC 5321 caps an address at 254 octets, the part
# before the @ at 64 (a server may refuse more: an account we could never email).
Email = Annotated[
    EmailStr,
    StringConstraints(max_length=254),
    NoNul,
    AfterValidator(str.lower),
    AfterValidator(_local_part_fits),  # after: lower-casing can lengthen UTF-8 ("İ")
]


class StrictModel(BaseModel):
    """No type coercion (a number is not a password) and no surprise fields."""

    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=4096)
