"""Domain failures of the auth service, each with its HTTP status and stable error code."""

from __future__ import annotations

from common.http import ApiError


class RetryLater(ApiError):
    """429 with Retry-After: the caller may try again in `retry_after` seconds."""

    error = "rate_limited"
    message = "too many requests, try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__(429, self.error, self.message, {"Retry-After": str(max(1, retry_after))})


class InvalidCode(ApiError):
    def __init__(self) -> None:
        super().__init__(400, "invalid_code", "the code is wrong, expired or already used")


class InvalidCredentials(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "invalid_credentials", "email or password is wrong")


class EmailNotVerified(ApiError):
    def __init__(self) -> None:
        super().__init__(403, "email_not_verified", "verify the email address first")


class RateLimited(RetryLater):
    error = "rate_limited"
    message = "too many requests, try again later"


class InvalidGrant(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "invalid_grant",
            "the refresh token is invalid, expired or revoked",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


class AccountLocked(RetryLater):
    error = "account_locked"
    message = "too many failed logins for this address; try again later"


class TooManyCodeAttempts(RetryLater):
    error = "too_many_code_attempts"
    message = "too many wrong codes for this address; try again later"
