"""Domain failures of the auth service, each with its HTTP status and stable error code."""

from __future__ import annotations

from common.http import ApiError


class InvalidCode(ApiError):
    def __init__(self) -> None:
        super().__init__(400, "invalid_code", "the code is wrong, expired or already used")


class InvalidCredentials(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "invalid_credentials", "email or password is wrong")


class EmailNotVerified(ApiError):
    def __init__(self) -> None:
        super().__init__(403, "email_not_verified", "verify the email address first")


class RateLimited(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "rate_limited",
            "too many requests, try again later",
            {"Retry-After": str(max(1, retry_after))},
        )


class InvalidGrant(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "invalid_grant",
            "the refresh token is invalid, expired or revoked",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


class AccountLocked(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "account_locked",
            "too many failed logins for this address; try again later",
            {"Retry-After": str(max(1, retry_after))},
        )


class TooManyCodeAttempts(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "too_many_code_attempts",
            "too many wrong codes for this address; try again later",
            {"Retry-After": str(max(1, retry_after))},
        )
