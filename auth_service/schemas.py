from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from common.schemas import Email, StrictModel, text

# Length counts code points (NIST SP 800-63B): 8..1024.
Password = text(8, 1024)
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Locale = Literal["en", "ru"]


class SignupIn(StrictModel):
    email: Email
    password: Password
    locale: Locale = "en"


class VerifyIn(StrictModel):
    email: Email
    code: Code


class ResendIn(StrictModel):
    email: Email
    locale: Locale = "en"


class LoginIn(StrictModel):
    email: Email
    # Any length may be tried at login, but not more than we would ever have accepted.
    password: text(1, 1024)  # type: ignore[valid-type]


class RefreshIn(StrictModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ForgotIn(StrictModel):
    email: Email
    locale: Locale = "en"


class ResetIn(StrictModel):
    email: Email
    code: Code
    new_password: Password


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    roles: list[str]
    created_at: datetime
