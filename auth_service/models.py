from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.clock import utcnow
from common.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Stored lower-cased: one account per mailbox, compared case-insensitively.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    email_verified: Mapped[bool] = mapped_column(default=False)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_mail_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by an admin: no login, no refresh, every session ended.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The language of the sign-up, and of the account's last change made signed in: what
    # an email the account did not ask for (an admin's change) is written in.
    locale: Mapped[str | None] = mapped_column(String(8))

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def language(self, asked: str | None = None) -> str:
        """The language of an email for a signed-in request that names `asked` (kept from
        now on) or none (the account's own)."""
        if asked is not None:
            self.locale = asked
        return self.locale or "en"


class OneTimeCode(Base):
    """An emailed code, stored only as an HMAC. `consumed_at` is set when it is used,
    burned by too many wrong tries, or superseded by a newer code."""

    __tablename__ = "one_time_codes"
    __table_args__ = (Index("ix_codes_user_purpose", "user_id", "purpose", "consumed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    code_hmac: Mapped[str] = mapped_column(String(64))
    # The password chosen at the sign-up that issued this code; verifying the code
    # activates it, so a stranger's later sign-up cannot set the mailbox owner's password.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # For an email change: the address the code was sent to, which becomes the account's.
    new_email: Mapped[str | None] = mapped_column(String(320))
    attempts: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserSession(Base):
    """One login: a refresh-token family, with where it came from. Ended (`ended_at`) at
    logout, by the user, by a password change or reset, or when an admin disables the
    account; an ended session's refresh tokens are revoked in the same transaction."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How it was signed in: RFC 8176 `amr` values, space-separated ("pwd", "pwd otp mfa"),
    # carried by every access token of the session. NULL for sessions from before.
    amr: Mapped[str | None] = mapped_column(String(64))
    # The application (AUTH_OAUTH_CLIENTS) it was opened for by an authorization code, and
    # the scopes granted to it (space-separated).
    client_id: Mapped[str | None] = mapped_column(String(128))
    scope: Mapped[str | None] = mapped_column(String(256))
    # The thumbprint of the key its refresh tokens are bound to (RFC 9449 DPoP): a public
    # client's, which showed a proof of it when the session was opened. Refreshing then
    # takes a proof by the same key. NULL: not bound.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The session (login) this token belongs to: one family of rotations.
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    # Never loaded; declared so that a flush inserts the session before its first token.
    login: Mapped[UserSession] = relationship(lazy="raise")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Revoked because auth replaced the session's pair (an address change), not because
    # its holder rotated it: presenting it again is no sign of a copy (auth_service/refresh.py).
    superseded: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Rotated by the grace period's replay of its predecessor (auth_service/refresh.py):
    # never presented before, so presenting it now is a copy's, never a replay.
    replayed_over: Mapped[bool] = mapped_column(default=False, server_default=false())


class OutboxEvent(Base):
    """An event written in the same transaction as the change it announces.

    `sent_at` is when the relay last published it (NULL: to be published). An email event
    is kept, payload and all, until the mailer reports it finished on
    `mail.delivery-status` (`acked_at`); one still unacknowledged a while after its last
    publication is published again. Then the payload is blanked, so the plaintext code
    does not linger."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(320))
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payload: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))  # becomes a Kafka header
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    publishes: Mapped[int] = mapped_column(default=0, server_default="0")
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class AddressThrottle(Base):
    """Guessing budgets per email address, kept for unknown addresses too, so that a lockout
    looks the same whether or not an account exists."""

    __tablename__ = "address_throttle"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    login_failures: Mapped[int] = mapped_column(default=0)
    last_login_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_failures: Mapped[int] = mapped_column(default=0)
    code_window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SignupRequest(Base):
    """A sign-up accepted and not yet carried out. The answer goes out once this row is
    committed, before anything that depends on the address's state, so no sign-up's
    answer is slower for an address with an account; carrying it out deletes the row in
    the same transaction (auth_service/accounts.py)."""

    __tablename__ = "signup_requests"
    # An id is never handed out again (SQLite's AUTOINCREMENT; PostgreSQL's sequences do
    # the same): a late claim by id must not take a newer sign-up's row.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Looked up by a verification, which must not let an old code beat a waiting dispute.
    email: Mapped[str] = mapped_column(String(320), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    locale: Mapped[str] = mapped_column(String(8))
    ip: Mapped[str | None] = mapped_column(String(64))
    # False when the address was over its sign-up budget: nothing is sent, but a
    # different password still disputes the pending one.
    send: Mapped[bool] = mapped_column()
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEvent(Base):
    """Security events. Never holds a code, a password or a token."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, object] | None] = mapped_column(JSON)


class TotpFactor(Base):
    """An account's authenticator app (RFC 6238): its secret, sealed under a key derived
    from the code secret and bound to the account (`totp.py`). Pending until its first
    code comes back (`confirmed_at`); `last_step` is the newest time step a code was
    accepted for, so no code works twice."""

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Wrong codes for this app, in the window that began at `failures_since`: a budget of
    # its own, which only someone past the first step (or signed in) can spend. The
    # address's budget of wrong emailed codes is anyone's to spend, so sharing it let a
    # stranger lock the owner out of the second step.
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    failures_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecoveryCode(Base):
    """A single-use code that stands in for the authenticator app, stored only as an HMAC."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hmac: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MfaChallenge(Base):
    """A first step passed (a password, or an emailed code) for an account with two-step
    sign-in: the opaque `mfa_token` handed back, stored as its SHA-256, which the second
    step trades for a session. Single use, short-lived, a few tries."""

    __tablename__ = "mfa_challenges"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    method: Mapped[str] = mapped_column(String(16))  # the first step: "password" or "code"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Passkey(Base):
    """A passkey (a WebAuthn credential) an account signs in with: the authenticator's
    public key, never a secret. Registered by a signed-in owner (`passkeys.py`)."""

    __tablename__ = "passkeys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The authenticator's id for it, base64url: what a sign-in names the passkey by.
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    # The authenticator's signature counter; 0 for those that keep none (most passkeys).
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(64))
    aaguid: Mapped[str | None] = mapped_column(String(36))  # the authenticator's model
    backed_up: Mapped[bool] = mapped_column(default=False)  # synced to a cloud account
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasskeyChallenge(Base):
    """A WebAuthn challenge handed out and not yet answered, stored as its SHA-256. An
    answer is checked against the challenge it signed, which it consumes: single use,
    short-lived. `user_id` for adding a passkey; none for a sign-in, which learns the
    account from the passkey."""

    __tablename__ = "passkey_challenges"

    challenge_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "register" or "login"
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class OAuthCode(Base):
    """An authorization code sent to an application's redirect URI, stored as its
    SHA-256: for that application, that redirect URI and the holder of the PKCE verifier,
    once, within a minute. A redeemed code keeps the session it opened, so a second
    redemption (a code that leaked) ends that session too (RFC 6749 §4.1.2); housekeeping
    deletes it once it has expired."""

    __tablename__ = "oauth_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_challenge: Mapped[str] = mapped_column(String(128))  # S256 of the verifier
    scope: Mapped[str] = mapped_column(String(256))  # what was granted, space-separated
    nonce: Mapped[str | None] = mapped_column(String(512))  # for the ID token
    # How, and when, the person who allowed it signed in (their session's).
    amr: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[uuid.UUID] = mapped_column(Uuid)  # their session, live at redemption
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # the one its redemption opened
    # The thumbprint of the key whose DPoP proof alone redeems it (RFC 9449 §10).
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))


class OAuthConsent(Base):
    """A person's yes to an application that is not trusted: the scopes they allowed it.
    While it covers what the application asks for, they are not asked again; they take it
    back from their account's Applications page, which also ends the application's
    sessions."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scope: Mapped[str] = mapped_column(String(256))  # what was allowed, space-separated
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClientAssertion(Base):
    """A client's signed assertion (`private_key_jwt`) that was used: the SHA-256 of its
    client_id and `jti`, so that each is taken once. `expires_at` is when the assertion
    can no longer verify; housekeeping deletes it a few minutes after that
    (`client_assertions.SKEW`, for instances whose clocks differ)."""

    __tablename__ = "client_assertions"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PushedRequest(Base):
    """An authorization request a client sent auth before sending the browser (RFC 9126,
    pushed.py), known by the SHA-256 of its request_uri's random part: used for one code,
    until `expires_at`; housekeeping deletes it after that."""

    __tablename__ = "pushed_requests"

    uri_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, str]] = mapped_column(JSON)  # of pushed.KEPT
    pushed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LogoutNotice(Base):
    """An application's session that ended, to tell the application at its back-channel
    logout URI (OpenID Connect Back-Channel Logout): written with the end, in its
    transaction, so none is lost; delivered by `backchannel.py`, which deletes it once the
    application answered, or gives up after its last attempt and keeps it, marked, for
    housekeeping to clear."""

    __tablename__ = "logout_notices"

    session_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # no key: it outlives the account
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # gave up
    error: Mapped[str | None] = mapped_column(String(200))  # the last attempt's
