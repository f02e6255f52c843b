"""Two-step sign-in for a signed-in user to turn on and off, and the second step of a
sign-in (`totp.py` has the codes and secrets).

Turning it on takes the password, then a first code from the app (which proves the app
holds the secret), and answers ten recovery codes, shown once. Turning it off, or getting
new recovery codes, takes the password and a code (from the app, or a recovery code).

A sign-in whose first step was right (a password, or an emailed code) for such an account
gets an `mfa_token` instead of a session (`MfaRequired`); `complete` trades it and a code
for the session. An mfa_token lives AUTH_MFA_CHALLENGE_SECONDS, is used once, and allows
AUTH_CODE_MAX_ATTEMPTS tries; every wrong code, here or while turning it on or off, also
counts toward the app's own budget of wrong codes (as many as an address has for emailed
codes), so a thief holding the password guesses no faster by starting sign-ins again, and
wrong emailed codes, which anyone can send, do not lock its owner out.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import audit, events
from auth_service.account import SelfService
from auth_service.accounts import Accounts
from auth_service.errors import (
    AccountDisabled,
    InvalidCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaSetupNotStarted,
    MfaUnavailable,
    NotAuthenticated,
)
from auth_service.models import MfaChallenge, RecoveryCode, TotpFactor, User
from auth_service.tokens import (
    APP_CODE,
    EMAILED_CODE,
    PASSWORD,
    RECOVERY_CODE,
    TWO_STEP,
    TokenPair,
    hash_refresh_token,
)
from auth_service.totp import (
    RECOVERY_PURPOSE,
    SecretBox,
    base32,
    drop_challenges,
    is_app_code,
    matching_step,
    new_recovery_codes,
    new_secret,
    normalize_recovery_code,
    otpauth_uri,
)
from auth_service.user_sessions import Caller, Client, end_others
from common.clock import utcnow
from common.events import EmailEventType

log = logging.getLogger(__name__)

# A session's `amr` after both steps: the first step's value, the second's, and "mfa".
FIRST_STEPS = {"password": PASSWORD, "code": EMAILED_CODE}
SECOND_STEPS = {"totp": APP_CODE, "recovery": RECOVERY_CODE}


@dataclass(frozen=True)
class MfaStatus:
    totp: bool
    recovery_codes_left: int


@dataclass(frozen=True)
class TotpSetup:
    secret: str  # base32, for typing into the app
    otpauth_uri: str  # for a QR code


async def turn_off(
    session: AsyncSession, user: User, locale: str, ip: str | None, **detail: object
) -> None:
    """The account's app, recovery codes and waiting sign-ins go; a notice goes to the
    address. In the caller's transaction, the account's row locked."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await session.execute(delete(TotpFactor).where(TotpFactor.user_id == user.id))
    await drop_challenges(session, user.id)
    audit.record(session, "mfa_disabled", user_id=user.id, email=user.email, ip=ip, **detail)
    events.email_notice(session, EmailEventType.MFA_DISABLED_NOTICE, user.email, locale)


@dataclass
class TwoStep:
    self_service: SelfService
    box: SecretBox

    @property
    def accounts(self) -> Accounts:
        return self.self_service.accounts

    async def status(self, user_id: uuid.UUID) -> MfaStatus:
        async with self.accounts.sessions() as session:
            factor = await session.get(TotpFactor, user_id)
            left = await session.scalar(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            )
        on = factor is not None and factor.confirmed_at is not None
        return MfaStatus(totp=on, recovery_codes_left=(left or 0) if on else 0)

    async def begin(self, caller: Caller, password: str, ip: str | None = None) -> TotpSetup:
        """A new secret, pending until its first code comes back (replacing one pending)."""
        user = caller.user
        await self.self_service.check_password(user, password, ip, "mfa_setup")
        secret = new_secret()
        async with self.accounts.sessions.begin() as session:
            await self.self_service.checked_row(session, user)
            factor = await session.get(TotpFactor, user.id)
            if factor is not None and factor.confirmed_at is not None:
                raise MfaAlreadyEnabled
            if factor is None:
                factor = TotpFactor(user_id=user.id)
                session.add(factor)
            factor.secret = self.box.seal(secret, user.id)
            factor.created_at, factor.last_step = utcnow(), None
            audit.record(session, "mfa_setup_started", user_id=user.id, email=user.email, ip=ip)
        issuer = self.accounts.settings.totp_issuer_name
        return TotpSetup(base32(secret), otpauth_uri(secret, user.email, issuer))

    async def confirm(
        self, caller: Caller, code: str, locale: str | None = None, ip: str | None = None
    ) -> list[str]:
        """Turn it on with the app's first code; the recovery codes, to show once. A notice
        goes to the address."""
        user = caller.user
        async with self.accounts.sessions() as session:
            row = await self._locked_user(session, user.id)
            factor = await session.get(TotpFactor, user.id)
            if factor is None:
                raise MfaSetupNotStarted
            if factor.confirmed_at is not None:
                raise MfaAlreadyEnabled
            now = utcnow()
            self._check_budget(factor, now)
            if not await self._app_code(session, factor, code.replace(" ", ""), now):
                await self._failed(session, row, factor, ip, "confirm")
            factor.confirmed_at = now
            language = row.language(locale)
            factor.failures, factor.failures_since = 0, None  # typos while setting it up
            # A session opened with the password alone (maybe a thief's, maybe one that
            # raced this confirmation) does not outlive the change, as with a new password.
            await end_others(session, caller)
            codes = await self._new_recovery_codes(session, user.id, now)
            audit.record(session, "mfa_enabled", user_id=user.id, email=row.email, ip=ip)
            events.email_notice(session, EmailEventType.MFA_ENABLED_NOTICE, row.email, language)
            await session.commit()
        self.accounts.relay.notify()
        return codes

    async def disable(
        self,
        caller: Caller,
        password: str,
        code: str,
        locale: str | None = None,
        ip: str | None = None,
    ) -> None:
        """Turn it off; a notice goes to the address."""
        user = caller.user
        await self.self_service.check_password(user, password, ip, "mfa_disable")
        async with self.accounts.sessions() as session:
            row = await self._second_step(session, user, code, ip, "disable")
            await turn_off(session, row, row.language(locale), ip)
            await session.commit()
        self.accounts.relay.notify()

    async def renew_recovery_codes(
        self, caller: Caller, password: str, code: str, ip: str | None = None
    ) -> list[str]:
        """New recovery codes; the old ones stop working."""
        user = caller.user
        await self.self_service.check_password(user, password, ip, "recovery_codes")
        async with self.accounts.sessions() as session:
            row = await self._second_step(session, user, code, ip, "recovery_codes")
            codes = await self._new_recovery_codes(session, row.id, utcnow())
            audit.record(session, "recovery_codes_renewed", user_id=row.id, email=row.email, ip=ip)
            await session.commit()
        return codes

    async def complete(self, mfa_token: str, code: str, client: Client) -> TokenPair:
        """The session a sign-in's first step earned, for a right code."""
        a = self.accounts
        token_hash = hash_refresh_token(mfa_token)
        async with a.sessions() as session:
            challenge = await session.get(MfaChallenge, token_hash)
            if challenge is None:
                raise InvalidMfaToken
            # The account first, as every other flow locks it, then the challenge.
            user = await session.get(User, challenge.user_id, with_for_update=True)
            now = utcnow()
            tries = await session.scalar(
                update(MfaChallenge)
                .where(
                    MfaChallenge.token_hash == token_hash,
                    MfaChallenge.used_at.is_(None),
                    MfaChallenge.expires_at > now,
                    MfaChallenge.attempts < a.settings.code_max_attempts,
                )
                .values(attempts=MfaChallenge.attempts + 1)
                .returning(MfaChallenge.attempts)
                .execution_options(synchronize_session=False)
            )
            if user is None or tries is None:
                raise InvalidMfaToken  # leaving the block rolls back
            factor = await session.get(TotpFactor, user.id)
            if factor is None or factor.confirmed_at is None:  # turned off since: sign in again
                raise InvalidMfaToken
            self._check_budget(factor, now)
            used = await self._either_code(session, factor, code, now)
            # Used up by a right code, or burned by its last wrong one.
            if used is not None or tries >= a.settings.code_max_attempts:
                await session.execute(
                    update(MfaChallenge)
                    .where(MfaChallenge.token_hash == token_hash)
                    .values(used_at=now)
                    .execution_options(synchronize_session=False)
                )
            if used is None:
                left = a.settings.code_max_attempts - tries
                await self._failed(session, user, factor, client.ip, "sign_in", left)
            if user.disabled:
                await session.commit()
                raise AccountDisabled
            method = f"{challenge.method}+{used}"
            audit.record(
                session, "login_ok", user_id=user.id, email=user.email, ip=client.ip, method=method
            )
            amr = (FIRST_STEPS[challenge.method], SECOND_STEPS[used], TWO_STEP)
            grant = a.tokens.issue(session, user, client, amr)
            await session.commit()
        return grant.sign()

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    async def _locked_user(session: AsyncSession, user_id: uuid.UUID) -> User:
        row = await session.get(User, user_id, with_for_update=True)
        if row is None:
            raise NotAuthenticated
        return row

    async def _second_step(
        self, session: AsyncSession, user: User, code: str, ip: str | None, action: str
    ) -> User:
        """The account's row, locked, once `code` (app or recovery) was right for it."""
        row = await self.self_service.checked_row(session, user)
        factor = await session.get(TotpFactor, row.id)
        if factor is None or factor.confirmed_at is None:
            raise MfaNotEnabled
        now = utcnow()
        self._check_budget(factor, now)
        if await self._either_code(session, factor, code, now) is None:
            await self._failed(session, row, factor, ip, action)
        return row

    async def _either_code(
        self, session: AsyncSession, factor: TotpFactor, code: str, now: datetime
    ) -> str | None:
        """Spend `code` for the account's confirmed app: "totp" for the app's, "recovery"
        for a recovery code, else None."""
        digits = code.replace(" ", "")
        if is_app_code(digits):
            return "totp" if await self._app_code(session, factor, digits, now) else None
        spent = await session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == factor.user_id,
                RecoveryCode.code_hmac.in_(self._recovery_digests(factor.user_id, code)),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return "recovery" if spent.rowcount == 1 else None  # type: ignore[attr-defined]

    async def _app_code(
        self, session: AsyncSession, factor: TotpFactor, code: str, now: datetime
    ) -> bool:
        """Whether `code` is the app's for a step not used before; if so that step is
        now the last used (conditionally, so two requests cannot both spend it)."""
        try:
            secret, current = self.box.open(factor.secret, factor.user_id)
        except (InvalidTag, ValueError) as exc:
            # Sealed under a key no longer accepted: the code secret was replaced without
            # being kept in AUTH_RETIRED_CODE_SECRETS. Nothing the user types can help; an
            # admin turns it off (`mfa: false`) and they set it up again.
            log.error("the authenticator app of user %s cannot be unsealed", factor.user_id)
            raise MfaUnavailable from exc
        step = matching_step(secret, code, now, factor.last_step)
        if step is None:
            return False
        newer = (TotpFactor.last_step.is_(None)) | (TotpFactor.last_step < step)
        # Sealed under a retired secret: sealed again under the current one, in the same
        # statement, so the retired secret can go once every app has been used.
        resealed = {} if current else {"secret": self.box.seal(secret, factor.user_id)}
        won = await session.execute(
            update(TotpFactor)
            .where(TotpFactor.user_id == factor.user_id, newer)
            .values(last_step=step, **resealed)
            .execution_options(synchronize_session=False)
        )
        return bool(won.rowcount == 1)  # type: ignore[attr-defined]

    def _check_budget(self, factor: TotpFactor, now: datetime) -> None:
        """TooManyCodeAttempts while the app's budget of wrong codes is spent."""
        self.accounts.guard.check_budget(factor.failures_since, factor.failures, now)

    async def _failed(
        self,
        session: AsyncSession,
        user: User,
        factor: TotpFactor,
        ip: str | None,
        action: str,
        tries_left: int | None = None,
    ) -> NoReturn:
        """A wrong code: counted against the app's budget, audited, committed; InvalidCode."""
        factor.failures_since, factor.failures = self.accounts.guard.count_failure(
            factor.failures_since, factor.failures, utcnow()
        )
        audit.record(session, "mfa_failed", user_id=user.id, email=user.email, ip=ip, action=action)
        await session.commit()
        raise InvalidCode(tries_left)

    def _recovery_digests(self, user_id: uuid.UUID, code: str) -> list[str]:
        """What a recovery code may be stored as (case, spaces, hyphens aside), under each
        accepted code secret; the current one first, which new codes are stored as."""
        return self.accounts.codes.hasher.digests(
            user_id, RECOVERY_PURPOSE, normalize_recovery_code(code)
        )

    async def _new_recovery_codes(
        self, session: AsyncSession, user_id: uuid.UUID, now: datetime
    ) -> list[str]:
        """Fresh recovery codes replacing the account's; the plaintexts, to show once."""
        await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = new_recovery_codes()
        rows = [
            {
                "user_id": user_id,
                "code_hmac": self._recovery_digests(user_id, code)[0],
                "created_at": now,
            }
            for code in codes
        ]
        await session.execute(insert(RecoveryCode), rows)
        return codes
