"""Request-field types shared by the services' schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


NoNulStr = Annotated[str, AfterValidator(_no_nul)]


def text(min_length: int, max_length: int, *, strip: bool = False) -> object:
    """A string type: length limits (after stripping, if asked), then no NUL characters.

    The constraints must sit on `str` itself: layered over a validator, pydantic checks
    the length before stripping, and "   " would pass a min_length of 1 as "".
    """
    return Annotated[
        str,
        StringConstraints(strip_whitespace=strip, min_length=min_length, max_length=max_length),
        AfterValidator(_no_nul),
    ]


# Lower-cased: one account per mailbox. RFC 5321 caps an address at 254 octets.
Email = Annotated[
    EmailStr,
    StringConstraints(max_length=254),
    AfterValidator(_no_nul),
    AfterValidator(str.lower),
]


class StrictModel(BaseModel):
    """No type coercion (a number is not a password) and no surprise fields."""

    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=4096)
