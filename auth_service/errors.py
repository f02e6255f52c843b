"""What the account rules can refuse, free of HTTP: `http_errors.py` gives each failure its
status code and stable `error` code at the edge, so a CLI or a consumer can reuse the rules."""

from __future__ import annotations

import math


class AuthError(Exception):
    """A refusal the caller should see (never a bug)."""


class InvalidCode(AuthError):
    """The code is wrong, expired, already used, burned, or the address has none.
    `tries_left`: where the caller holds something a wrong code uses up (an mfa_token),
    how many more it takes (0: it is spent, start again)."""

    def __init__(self, tries_left: int | None = None) -> None:
        self.tries_left = tries_left
        super().__init__("invalid code")


class InvalidCredentials(AuthError):
    """Wrong email or password (never saying which)."""


class EmailNotVerified(AuthError):
    """Right password, but the address was never confirmed."""


class InvalidGrant(AuthError):
    """The refresh token is unknown, expired or revoked."""


class KeyBoundGrant(InvalidGrant):
    """The refresh token is bound to a key (RFC 9449 DPoP), and the request came with no
    proof by that key."""


class InvalidCodeGrant(InvalidGrant):
    """An authorization code that is unknown, expired, used, another client's or another
    redirect URI's, or whose PKCE verifier does not match (oauth.py)."""


class KeyBoundCode(InvalidCodeGrant):
    """An authorization code bound to a key (RFC 9449 §10), redeemed without a DPoP
    proof by that key."""


class UnknownClient(AuthError):
    """No OAuth client has that client_id, or it registered no such redirect URI."""


class InvalidRequestUri(AuthError):
    """A request_uri that names no live request the client pushed (RFC 9126): unknown,
    expired, already given a code, or another client's (pushed.py)."""


class PushedRequestRequired(AuthError):
    """An authorization request that was not pushed, from a client whose requests must be
    (RFC 9126, `require_pushed_authorization_requests`)."""


class ApplicationSession(AuthError):
    """An application's session (opened by an authorization code) calling what only the
    person may: their password, address, sessions, second factors, the admin API, codes
    for other applications, `me` (the address and roles whatever its scopes). It reads
    OpenID Connect's userinfo, and uses the films API with the `films` scope."""


class SignInTooOld(AuthError):
    """The person signed in longer ago than the application's `max_age` allows."""


class ConsentRequired(AuthError):
    """The person has not allowed the application what it asks for (or not yet all of
    it): the page must ask them."""


class LogoutRefused(AuthError):
    """An application's logout request whose ID token hint is not ours or not for one of
    our applications, whose client_id is another, or whose post-logout redirect URI that
    application did not register."""


class ConsentNotFound(AuthError):
    """The person allowed no such application."""


class ClientRefused(AuthError):
    """At the token endpoint: an unknown client, or a confidential one without its right
    secret (RFC 6749's invalid_client)."""


class NoScope(AuthError):
    """The client credentials grant: nothing asked for is a scope the client may get
    (RFC 6749's invalid_scope)."""


class AccountDisabled(AuthError):
    """Right credentials, but an admin disabled the account."""


class InvalidPassword(AuthError):
    """A signed-in user's current password, asked again before a sensitive change, is wrong."""


class NotAuthenticated(AuthError):
    """The access token is valid, but its account is gone or disabled, or its session ended."""


class Forbidden(AuthError):
    """The caller lacks the role this needs."""


class EmailTaken(AuthError):
    """The address became another account's before the change was confirmed."""


class EmailUnchanged(AuthError):
    """The new address is the account's current one."""


class SessionNotFound(AuthError):
    """No session of the caller's has that id (another user's counts as none)."""


class NotListening(AuthError):
    """An admin's retry of back-channel logout notices for an application that does not
    listen for them (or is not configured)."""


class UserNotFound(AuthError):
    """No account has that id."""


class AdminSelfLockout(AuthError):
    """An admin may not disable their own account or remove their own admin role."""


class MfaRequired(AuthError):
    """The first step was right, and the account has two-step sign-in: present `token`
    with a code from the authenticator app (or a recovery code) within `expires_in`."""

    def __init__(self, token: str, expires_in: int) -> None:
        self.token = token
        self.expires_in = expires_in
        super().__init__("a second step is needed")


class InvalidMfaToken(AuthError):
    """The mfa_token is unknown, expired, used, or burned by wrong codes: sign in again."""


class MfaAlreadyEnabled(AuthError):
    """The account has an authenticator app already (turn it off first)."""


class MfaSetupNotStarted(AuthError):
    """No authenticator app is being set up: start with the password."""


class MfaNotEnabled(AuthError):
    """The account has no authenticator app."""


class MfaUnavailable(AuthError):
    """The account's authenticator app cannot be checked (its secret was sealed under a
    code secret since replaced): an admin has to turn two-step sign-in off."""


class MfaSessionRequired(AuthError):
    """The admin API, with AUTH_ADMIN_REQUIRES_MFA, for a session that did not pass
    two-step sign-in."""


class OwnTwoStep(AuthError):
    """An admin turns their own two-step sign-in off as anyone does: with the password
    and a code, not through the admin API (a stolen admin token must not do it)."""


class InvalidPasskey(AuthError):
    """A new passkey's answer did not check out: not made for this site, for a challenge
    this account was not handed (or that expired or was used), or not one we can read."""


class PasskeyNotAccepted(AuthError):
    """A passkey sign-in did not check out: an unknown passkey, a signature that does not
    verify, or a challenge unknown, expired or used. Ask for new options and try again."""


class PasskeyExists(AuthError):
    """That passkey is registered already."""


class TooManyPasskeys(AuthError):
    """The account has as many passkeys as it may: remove one first."""


class PasskeyNotFound(AuthError):
    """No passkey of the caller's has that id."""


class RetryLater(AuthError):
    """Refused for now; the caller may try again in `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"retry after {self.retry_after}s")


class RateLimited(RetryLater):
    """Too many requests from one client or for one account."""


class AccountLocked(RetryLater):
    """Too many failed logins for this address in a row."""


class TooManyCodeAttempts(RetryLater):
    """Too many wrong codes for this address across all its codes."""
