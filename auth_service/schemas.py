from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    JsonValue,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from auth_service.common_passwords import is_address, is_common
from auth_service.passwords import MAX_PASSWORD_BYTES, normalize
from common.schemas import Email, NoNul, StrictModel


def _fits(password: str) -> str:
    if len(normalize(password)) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is over {MAX_PASSWORD_BYTES} bytes once normalised")
    return password


def _uncommon(password: str) -> str:
    if is_common(password):
        raise PydanticCustomError(
            "password_too_common", "this password is among the most common ones; choose another"
        )
    return password


def not_the_address(password: str, email: str | None) -> str:
    if email is not None and is_address(password, email):
        raise PydanticCustomError("password_is_email", "the password may not be the address")
    return password


# Length counts code points (NIST SP 800-63B): 8..1024, and what hashing takes. A new
# password is also none of the most common ones (auth_service/common_passwords.py).
Password = Annotated[
    str,
    StringConstraints(min_length=8, max_length=1024),
    NoNul,
    AfterValidator(_fits),
    AfterValidator(_uncommon),
]
# Any length may be tried at login, but not more than we would ever have accepted.
AnyPassword = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), NoNul, AfterValidator(_fits)
]
Code = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Locale = Literal["en", "ru"]


class SignupIn(StrictModel):
    email: Email
    password: Password
    locale: Locale = "en"

    @field_validator("password")
    @classmethod
    def _not_the_address(cls, password: str, info: ValidationInfo) -> str:
        return not_the_address(password, info.data.get("email"))


class VerifyIn(StrictModel):
    email: Email
    code: Code


class ResendIn(StrictModel):
    email: Email
    locale: Locale = "en"


class LoginIn(StrictModel):
    email: Email
    password: AnyPassword


class RefreshIn(StrictModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class ForgotIn(StrictModel):
    email: Email
    locale: Locale = "en"


class ResetIn(StrictModel):
    email: Email
    code: Code
    new_password: Password

    @field_validator("new_password")
    @classmethod
    def _not_the_address(cls, password: str, info: ValidationInfo) -> str:
        return not_the_address(password, info.data.get("email"))


class LoginCodeIn(StrictModel):
    email: Email
    locale: Locale = "en"


class LoginCodeVerifyIn(StrictModel):
    email: Email
    code: Code


class PasswordChangeIn(StrictModel):
    current_password: AnyPassword
    new_password: Password
    locale: Locale | None = None  # of the notice email; none: the account's (User.language)


class EmailChangeIn(StrictModel):
    new_email: Email
    password: AnyPassword
    locale: Locale | None = None


class EmailChangeConfirmIn(StrictModel):
    code: Code
    locale: Locale | None = None  # of the notice to the old address


class DeleteAccountIn(StrictModel):
    password: AnyPassword


# What the second step of a sign-in takes: the app's six digits (as some apps show them,
# `123 456`, too), or a recovery code (`xxxxx-xxxxx`; case, spaces and hyphens do not
# matter).
AppCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3} ?[0-9]{3}$")]
SecondStepCode = Annotated[
    str, StringConstraints(pattern=r"^(?:[0-9]{3} ?[0-9]{3}|[A-Za-z0-9][A-Za-z0-9 -]{9,20})$")
]


class MfaLoginIn(StrictModel):
    mfa_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    code: SecondStepCode


class TotpBeginIn(StrictModel):
    password: AnyPassword


class TotpConfirmIn(StrictModel):
    code: AppCode
    locale: Locale | None = None  # of the notice email


class SecondStepIn(StrictModel):
    """Turning two-step sign-in off, or new recovery codes: the password and a code."""

    password: AnyPassword
    code: SecondStepCode
    locale: Locale | None = None  # of the notice email when it is turned off


# A browser's `PublicKeyCredential.toJSON()`, checked by py_webauthn (`passkeys.py`): its
# fields vary with the browser and the authenticator, so only its shape is fixed here.
Credential = dict[str, JsonValue]
PasskeyName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True), NoNul
]


class PasskeyBeginIn(StrictModel):
    password: AnyPassword


class PasskeyAddIn(StrictModel):
    credential: Credential
    name: PasskeyName | None = None  # "Passkey" if none
    locale: Locale | None = None  # of the notice email


class PasskeyLoginIn(StrictModel):
    credential: Credential


class PublicKeyOptionsOut(BaseModel):
    """For the browser: `navigator.credentials.create({publicKey:
    PublicKeyCredential.parseCreationOptionsFromJSON(publicKey)})` (or `.get` with
    `parseRequestOptionsFromJSON`)."""

    publicKey: dict[str, JsonValue]  # WebAuthn's name for it


class PasskeyOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool  # synced to the user's cloud account (a password manager, a phone's)


class PasskeysOut(BaseModel):
    items: list[PasskeyOut]


class MfaStatusOut(BaseModel):
    totp: bool
    recovery_codes_left: int


class TotpSetupOut(BaseModel):
    secret: str  # base32, to type into the app
    otpauth_uri: str  # the same, as a QR code carries it


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]  # shown once: only their HMACs are kept


class MfaRequiredOut(BaseModel):
    """403 from a sign-in whose first step was right, for an account with two-step
    sign-in: send `mfa_token` and a code to `POST /v1/auth/login/mfa`."""

    error: Literal["mfa_required"] = "mfa_required"
    message: str
    mfa_token: str
    expires_in: int


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    # DPoP where the session is bound to a key (RFC 9449): a pair auth gives again, after
    # an address change, to a caller that showed a proof by it.
    token_type: Literal["Bearer", "DPoP"] = "Bearer"
    expires_in: int


class MeOut(BaseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    roles: list[str]
    created_at: datetime


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool  # the session the request's access token belongs to
    # An application's (AUTH_OAUTH_CLIENTS), opened by an authorization code: its id and name.
    client_id: str | None = None
    application: str | None = None


class SessionsOut(BaseModel):
    items: list[SessionOut]


Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class UserOut(BaseModel):
    """An account as an admin sees it."""

    id: uuid.UUID
    email: str
    email_verified: bool
    roles: list[str]
    created_at: datetime
    disabled: bool
    disabled_at: datetime | None
    mfa: bool  # two-step sign-in is on
    passkeys: int  # how many passkeys can sign in to it


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class LogoutNoticeOut(BaseModel):
    """A back-channel logout notice not yet told (auth_service/backchannel.py)."""

    client_id: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime  # when the session ended
    attempts: int
    next_attempt_at: datetime
    failed_at: datetime | None  # given up on: no attempt comes
    error: str | None  # the last attempt's


class LogoutNoticePage(BaseModel):
    items: list[LogoutNoticeOut]
    total: int
    limit: int
    offset: int


class RetryIn(StrictModel):
    client_id: Annotated[str, Field(max_length=128), NoNul] | None = Field(
        default=None, description="every listening application's if left out"
    )


class RetriedOut(BaseModel):
    retried: int


class UserPatch(StrictModel):
    """What an admin may change; omitted fields stay as they are. `roles` replaces the
    list: roles in it and not on the account are granted, the others revoked."""

    disabled: bool | None = None
    roles: Annotated[list[Role], Field(max_length=20)] | None = None
    # Only off: the account's owner lost both the app and the recovery codes. Turning it
    # on takes the owner's app.
    mfa: Literal[False] | None = None
