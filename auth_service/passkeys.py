"""Passkeys (WebAuthn): signing in with a key that the user's device or password manager
holds, unlocked there by a PIN or a fingerprint, instead of with a password.

A signed-in owner adds one with the password: `registration_options` checks it and hands
out a challenge; the browser has the authenticator make a key pair for this site and
sign the challenge; `register` checks that answer and keeps the public key. A sign-in
asks `login_options` for a challenge that names no account (the passkey knows whose it
is, so nobody learns which addresses have passkeys), and `login` trades a signature
over it for a session.

Every challenge is random, kept only as its SHA-256, short-lived and used once, whether
its answer checks out or not. Only passkeys that verified their user (a PIN, a
fingerprint) count: such a passkey is something the user has and something they know or
are, so its session's `amr` says "mfa" and skips the authenticator-app step. Checking
the answers is Duo Labs' py_webauthn, imported at the first passkey request rather than
at start, as most deployments' processes never need its 6 MB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import audit, events
from auth_service.account import SelfService
from auth_service.accounts import Accounts
from auth_service.errors import (
    AccountDisabled,
    InvalidPasskey,
    MfaSessionRequired,
    PasskeyExists,
    PasskeyNotAccepted,
    PasskeyNotFound,
    TooManyPasskeys,
)
from auth_service.models import Passkey, PasskeyChallenge, User
from auth_service.tokens import POSSESSION, TWO_STEP, TokenPair
from auth_service.totp import drop_passkey_options, has_factor
from auth_service.user_sessions import Caller, Client
from common.clock import utcnow
from common.events import EmailEventType

log = logging.getLogger(__name__)

REGISTER, LOGIN = "register", "login"
CEREMONY_SECONDS = 300  # how long a challenge may be answered (the browser's timeout too)
MAX_PASSKEYS = 20  # per account
MAX_CREDENTIAL_ID_BYTES = 1023  # WebAuthn §7.1 step 21: longer ones are refused
DEFAULT_NAME = "Passkey"


def _webauthn() -> ModuleType:
    return importlib.import_module("webauthn")


def _structs() -> ModuleType:
    return importlib.import_module("webauthn.helpers.structs")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: object) -> bytes | None:
    """The bytes of a base64url string, or None for anything else."""
    if not isinstance(text, str) or not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def signed_challenge(credential: dict[str, Any]) -> bytes | None:
    """The challenge an answer says it signed (from its clientDataJSON), to find it by;
    the signature check that follows makes sure it is the one signed."""
    response = credential.get("response")
    if not isinstance(response, dict):
        return None
    client_data = from_b64url(response.get("clientDataJSON"))
    try:
        parsed = json.loads(client_data) if client_data else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    return from_b64url(parsed.get("challenge")) if isinstance(parsed, dict) else None


@dataclass(frozen=True)
class PasskeyInfo:
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    backed_up: bool

    @classmethod
    def of(cls, row: Passkey) -> PasskeyInfo:
        return cls(row.id, row.name, row.created_at, row.last_used_at, row.backed_up)


@dataclass
class Passkeys:
    self_service: SelfService

    @property
    def accounts(self) -> Accounts:
        return self.self_service.accounts

    async def registration_options(
        self, caller: Caller, password: str, ip: str | None = None
    ) -> dict[str, Any]:
        """What the browser's `navigator.credentials.create` takes, once the password is
        right: a new challenge, and the account's passkeys, which the same authenticator
        will not make again."""
        user = caller.user
        await self.self_service.check_password(user, password, ip, "passkey_add")
        challenge = secrets.token_bytes(32)
        async with self.accounts.sessions.begin() as session:
            row = await self.self_service.checked_row(session, user)
            await self._may_add(session, caller)
            have = list(
                await session.scalars(
                    select(Passkey.credential_id).where(Passkey.user_id == user.id)
                )
            )
            if len(have) >= MAX_PASSKEYS:
                raise TooManyPasskeys
            # One at a time: asking again replaces the challenge not yet answered.
            await drop_passkey_options(session, user.id)
            self._hand_out(session, challenge, REGISTER, user.id)
        wa, structs = _webauthn(), _structs()
        required = structs.UserVerificationRequirement.REQUIRED
        options = wa.generate_registration_options(
            rp_id=self.accounts.settings.passkey_rp,
            rp_name=self.accounts.settings.totp_issuer_name,
            user_id=user.id.bytes,
            user_name=row.email,
            user_display_name=row.email,
            challenge=challenge,
            timeout=CEREMONY_SECONDS * 1000,
            authenticator_selection=structs.AuthenticatorSelectionCriteria(
                resident_key=structs.ResidentKeyRequirement.REQUIRED,
                user_verification=required,
            ),
            exclude_credentials=[
                structs.PublicKeyCredentialDescriptor(id=from_b64url(c) or b"") for c in have
            ],
        )
        return dict(json.loads(wa.options_to_json(options)))

    async def register(
        self,
        caller: Caller,
        credential: dict[str, Any],
        name: str | None,
        locale: str | None = None,
        ip: str | None = None,
    ) -> PasskeyInfo:
        """Keep the passkey the authenticator made, once its answer checks out for a
        challenge this account was handed; a notice goes to the address."""
        user = caller.user
        challenge = signed_challenge(credential)
        async with self.accounts.sessions() as session:
            # As when the options were asked for: a reset or change since ended this session
            # and dropped the challenge; an app turned on since asks for a two-step session.
            row = await self.self_service.checked_row(session, user)
            await self._may_add(session, caller)
            if challenge is None or not await self._spend(session, challenge, REGISTER, user.id):
                raise InvalidPasskey
            settings = self.accounts.settings
            try:
                made = _webauthn().verify_registration_response(
                    credential=credential,
                    expected_challenge=challenge,
                    expected_rp_id=settings.passkey_rp,
                    expected_origin=settings.passkey_origin_list,
                    require_user_verification=True,
                )
            except Exception as exc:  # whatever a hostile answer makes the parser raise
                await self._failed(session, row.id, row.email, ip, REGISTER, exc)
                raise InvalidPasskey from exc
            if len(made.credential_id) > MAX_CREDENTIAL_ID_BYTES:
                too_long = ValueError("credential id too long")
                await self._failed(session, row.id, row.email, ip, REGISTER, too_long)
                raise InvalidPasskey
            credential_id = b64url(made.credential_id)
            taken = await session.scalar(
                select(Passkey.id).where(Passkey.credential_id == credential_id)
            )
            if taken is not None:
                await session.commit()  # the challenge is spent all the same
                raise PasskeyExists
            count = await session.scalar(
                select(func.count()).select_from(Passkey).where(Passkey.user_id == user.id)
            )
            if (count or 0) >= MAX_PASSKEYS:
                await session.commit()
                raise TooManyPasskeys
            passkey = Passkey(
                user_id=user.id,
                credential_id=credential_id,
                public_key=made.credential_public_key,
                sign_count=made.sign_count,
                name=name or DEFAULT_NAME,
                aaguid=made.aaguid,
                backed_up=made.credential_backed_up,
                created_at=utcnow(),
            )
            session.add(passkey)
            try:
                await session.flush()
            except IntegrityError as exc:  # the same passkey, added by a request beside this
                raise PasskeyExists from exc
            audit.record(
                session,
                "passkey_added",
                user_id=user.id,
                email=row.email,
                ip=ip,
                passkey=str(passkey.id),
            )
            notice = EmailEventType.PASSKEY_ADDED_NOTICE
            events.email_notice(session, notice, row.email, row.language(locale))
            info = PasskeyInfo.of(passkey)
            await session.commit()
        self.accounts.relay.notify()
        return info

    async def listed(self, user_id: uuid.UUID) -> list[PasskeyInfo]:
        async with self.accounts.sessions() as session:
            rows = await session.scalars(
                select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.created_at)
            )
            return [PasskeyInfo.of(row) for row in rows]

    async def remove(self, caller: Caller, passkey_id: uuid.UUID, ip: str | None = None) -> None:
        user = caller.user
        async with self.accounts.sessions.begin() as session:
            gone = await session.execute(
                delete(Passkey)
                .where(Passkey.id == passkey_id, Passkey.user_id == user.id)
                .execution_options(synchronize_session=False)
            )
            if gone.rowcount != 1:  # type: ignore[attr-defined]  # a DELETE's CursorResult
                raise PasskeyNotFound
            audit.record(
                session,
                "passkey_removed",
                user_id=user.id,
                email=user.email,
                ip=ip,
                passkey=str(passkey_id),
            )
            # A way in gone: if the owner did not do it, a session of theirs is not theirs.
            notice = EmailEventType.PASSKEY_REMOVED_NOTICE
            events.email_notice(session, notice, user.email, user.language())
        self.accounts.relay.notify()

    async def login_options(self) -> dict[str, Any]:
        """What the browser's `navigator.credentials.get` takes: a challenge for any
        passkey of this site. It names no account and lists no passkey."""
        challenge = secrets.token_bytes(32)
        async with self.accounts.sessions.begin() as session:
            self._hand_out(session, challenge, LOGIN, None)
        wa, structs = _webauthn(), _structs()
        options = wa.generate_authentication_options(
            rp_id=self.accounts.settings.passkey_rp,
            challenge=challenge,
            timeout=CEREMONY_SECONDS * 1000,
            user_verification=structs.UserVerificationRequirement.REQUIRED,
        )
        return dict(json.loads(wa.options_to_json(options)))

    async def login(self, credential: dict[str, Any], client: Client) -> TokenPair:
        """A session for the passkey's account, for its signature over a challenge handed
        out for sign-ins. Every failure looks the same (`PasskeyNotAccepted`)."""
        challenge = signed_challenge(credential)
        raw_id = from_b64url(credential.get("rawId", credential.get("id")))
        if challenge is None or raw_id is None:
            raise PasskeyNotAccepted
        async with self.accounts.sessions() as session:
            spent = await self._spend(session, challenge, LOGIN, None)
            passkey = await session.scalar(
                select(Passkey).where(Passkey.credential_id == b64url(raw_id))
            )
            user = None
            if passkey is not None:
                user = await session.get(User, passkey.user_id, with_for_update=True)
            if not spent or passkey is None or user is None:
                await self._failed(session, None, None, client.ip, LOGIN)
                raise PasskeyNotAccepted
            settings = self.accounts.settings
            try:
                if not self._holder_is(credential, user.id):
                    raise ValueError("the user handle names another account")
                used = _webauthn().verify_authentication_response(
                    credential=credential,
                    expected_challenge=challenge,
                    expected_rp_id=settings.passkey_rp,
                    expected_origin=settings.passkey_origin_list,
                    credential_public_key=passkey.public_key,
                    credential_current_sign_count=passkey.sign_count,
                    require_user_verification=True,
                )
            except Exception as exc:  # as in `register`
                await self._failed(session, user.id, user.email, client.ip, LOGIN, exc)
                raise PasskeyNotAccepted from exc
            # Conditionally: of two sign-ins with the same counter value, one is a copy's; and
            # one without a counter must not set back one that another sign-in moved on.
            new = used.new_sign_count
            counted = Passkey.sign_count < new if new else Passkey.sign_count == 0
            moved = await session.execute(
                update(Passkey)
                .where(Passkey.id == passkey.id, counted)
                .values(
                    sign_count=used.new_sign_count,
                    last_used_at=utcnow(),
                    backed_up=used.credential_backed_up,
                )
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                await self._failed(session, user.id, user.email, client.ip, LOGIN)
                raise PasskeyNotAccepted
            if user.disabled:
                await session.commit()
                raise AccountDisabled
            audit.record(
                session,
                "login_ok",
                user_id=user.id,
                email=user.email,
                ip=client.ip,
                method="passkey",
                passkey=str(passkey.id),
            )
            grant = self.accounts.tokens.issue(session, user, client, (POSSESSION, TWO_STEP))
            await session.commit()
        return grant.sign()

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    async def _may_add(session: AsyncSession, caller: Caller) -> None:
        """A passkey is both steps of a sign-in: where the account has two-step sign-in on,
        only a session that passed it may add one (else the password and a stolen
        one-step session would make a lasting second step)."""
        if not caller.two_step and await session.scalar(select(has_factor(caller.user.id))):
            raise MfaSessionRequired

    @staticmethod
    def _holder_is(credential: dict[str, Any], user_id: uuid.UUID) -> bool:
        """The user handle a passkey answers with, if any, is the account it was made for."""
        response = credential.get("response")
        handle = response.get("userHandle") if isinstance(response, dict) else None
        return handle is None or from_b64url(handle) == user_id.bytes

    def _hand_out(
        self,
        session: AsyncSession,
        challenge: bytes,
        purpose: str,
        user_id: uuid.UUID | None,
    ) -> None:
        now = utcnow()
        session.add(
            PasskeyChallenge(
                challenge_hash=_digest(challenge),
                purpose=purpose,
                user_id=user_id,
                created_at=now,
                expires_at=now + timedelta(seconds=CEREMONY_SECONDS),
            )
        )

    @staticmethod
    async def _spend(
        session: AsyncSession, challenge: bytes, purpose: str, user_id: uuid.UUID | None
    ) -> bool:
        """Whether `challenge` was handed out for this, unexpired and unused; it is used
        now (a DELETE, so two answers cannot both spend it)."""
        owner = PasskeyChallenge.user_id
        spent = await session.execute(
            delete(PasskeyChallenge)
            .where(
                PasskeyChallenge.challenge_hash == _digest(challenge),
                PasskeyChallenge.purpose == purpose,
                owner.is_(None) if user_id is None else owner == user_id,
                PasskeyChallenge.expires_at > utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(spent.rowcount == 1)  # type: ignore[attr-defined]

    @staticmethod
    async def _failed(
        session: AsyncSession,
        user_id: uuid.UUID | None,
        email: str | None,
        ip: str | None,
        action: str,
        exc: Exception | None = None,
    ) -> None:
        """Audited and committed (the challenge stays spent). The reason goes to the log by
        its type only: an answer's text is the sender's."""
        reason = type(exc).__name__ if exc is not None else "unknown_or_spent"
        log.info("passkey %s refused: %s", action, reason)
        audit.record(session, "passkey_failed", user_id=user_id, email=email, ip=ip, action=action)
        await session.commit()
