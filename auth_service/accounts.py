"""Sign-up, verification, login and password reset: the account rules, free of HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit
from auth_service.codes import CodeHasher, new_code
from auth_service.config import AuthSettings
from auth_service.errors import EmailNotVerified, InvalidCode, InvalidCredentials
from auth_service.models import OneTimeCode, User
from auth_service.outbox import OutboxRelay, add_event
from auth_service.passwords import PasswordHasher
from auth_service.refresh import RefreshTokens
from auth_service.throttle import AddressGuard
from auth_service.tokens import TokenPair
from common.events import EmailCodeEvent, EmailEventType, utcnow

VERIFY = EmailEventType.EMAIL_VERIFICATION.value
RESET = EmailEventType.PASSWORD_RESET.value


@dataclass
class Accounts:
    settings: AuthSettings
    sessions: async_sessionmaker[AsyncSession]
    passwords: PasswordHasher
    codes: CodeHasher
    tokens: RefreshTokens
    relay: OutboxRelay
    guard: AddressGuard

    async def signup(self, email: str, password: str, locale: str, ip: str | None = None) -> None:
        # Hash before looking anything up, so every branch costs the same.
        password_hash = await self.passwords.hash(password)
        try:
            await self._signup(email, password_hash, locale, ip)
        except IntegrityError:
            # A parallel sign-up for the same address won the insert; it sends the code.
            return
        self.relay.notify()

    async def _signup(self, email: str, password_hash: str, locale: str, ip: str | None) -> None:
        async with self.sessions.begin() as session:
            user = await self._user_by_email(session, email, for_update=True)
            now = utcnow()
            if user is None:
                user = User(email=email, password_hash=password_hash, roles=[])
                session.add(user)
                await session.flush()
                self._send_code(session, user, VERIFY, locale, now, password_hash)
                audit.record(session, "signup", user_id=user.id, email=email, ip=ip)
            elif not self._cooled_down(user, now):
                return
            elif user.email_verified:
                user.last_mail_at = now
                add_event(
                    session,
                    EmailCodeEvent(
                        type=EmailEventType.ACCOUNT_EXISTS, email=user.email, locale=locale
                    ),
                )
                audit.record(session, "signup", user_id=user.id, email=email, ip=ip, exists=True)
            else:
                await self._retire_codes(session, user.id, VERIFY, now)
                self._send_code(session, user, VERIFY, locale, now, password_hash)
                audit.record(session, "signup", user_id=user.id, email=email, ip=ip, again=True)

    async def resend_verification(self, email: str, locale: str) -> None:
        async with self.sessions.begin() as session:
            user = await self._user_by_email(session, email, for_update=True)
            now = utcnow()
            if user is None or user.email_verified or not self._cooled_down(user, now):
                return
            latest = await self._active_code(session, user.id, VERIFY)
            await self._retire_codes(session, user.id, VERIFY, now)
            pending = latest.password_hash if latest is not None else None
            self._send_code(session, user, VERIFY, locale, now, pending)
        self.relay.notify()

    async def verify_email(self, email: str, code: str, ip: str | None = None) -> TokenPair:
        async with self.sessions() as session:
            user, row = await self._redeem(session, email, VERIFY, code, ip)
            if row.password_hash is not None:
                user.password_hash = row.password_hash
            user.email_verified = True
            audit.record(session, "verify_ok", user_id=user.id, email=email, ip=ip)
            pair = self.tokens.issue(session, user)
            await session.commit()
            return pair

    async def login(self, email: str, password: str, ip: str | None = None) -> TokenPair:
        async with self.sessions() as session:
            # A locked address answers at once, known or not: no hash, no enumeration.
            has_failures = await self.guard.check_login(session, email, utcnow())
            user = await self._user_by_email(session, email)
        if user is None:
            await self.passwords.verify_dummy(password)
            ok, upgraded_hash = False, None
        else:
            ok, upgraded_hash = await self.passwords.verify(password, user.password_hash)
        if not ok:
            async with self.sessions.begin() as session:
                locked_for = await self.guard.login_failed(session, email, utcnow())
                user_id = user.id if user else None
                audit.record(session, "login_failed", user_id=user_id, email=email, ip=ip)
                if locked_for:
                    audit.record(
                        session, "lockout", user_id=user_id, email=email, ip=ip, seconds=locked_for
                    )
            raise InvalidCredentials
        assert user is not None
        if not user.email_verified:
            raise EmailNotVerified
        async with self.sessions.begin() as session:
            if has_failures:
                await self.guard.login_succeeded(session, email)
            if upgraded_hash is not None:
                await session.execute(
                    update(User).where(User.id == user.id).values(password_hash=upgraded_hash)
                )
            audit.record(
                session,
                "login_ok",
                user_id=user.id,
                email=email,
                ip=ip,
                rehashed=bool(upgraded_hash),
            )
            return self.tokens.issue(session, user)

    async def forgot_password(self, email: str, locale: str, ip: str | None = None) -> None:
        async with self.sessions.begin() as session:
            user = await self._user_by_email(session, email, for_update=True)
            now = utcnow()
            # Unverified accounts sign up again instead; the answer is the same either way.
            if user is None or not user.email_verified or not self._cooled_down(user, now):
                return
            await self._retire_codes(session, user.id, RESET, now)
            self._send_code(session, user, RESET, locale, now)
            audit.record(session, "password_reset_requested", user_id=user.id, email=email, ip=ip)
        self.relay.notify()

    async def reset_password(
        self, email: str, code: str, new_password: str, ip: str | None = None
    ) -> None:
        # Hash first: a wrong code costs the same time as a right one.
        new_hash = await self.passwords.hash(new_password)
        async with self.sessions() as session:
            user, _ = await self._redeem(session, email, RESET, code, ip)
            user.password_hash = new_hash
            # Whoever held a session (maybe the reason for the reset) is logged out.
            await RefreshTokens.revoke_all(session, user.id)
            audit.record(session, "password_reset", user_id=user.id, email=email, ip=ip)
            await session.commit()

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        async with self.sessions() as session:
            return await session.get(User, user_id)

    async def _redeem(
        self, session: AsyncSession, email: str, purpose: str, code: str, ip: str | None
    ) -> tuple[User, OneTimeCode]:
        """The account and its matching live code, now used up. Otherwise the wrong try is
        recorded against the address (known or not), committed, and InvalidCode raised."""
        now = utcnow()
        await self.guard.check_codes(session, email, now)
        user = await self._user_by_email(session, email, for_update=True)
        row = None
        if user is not None and (purpose != VERIFY or not user.email_verified):
            row = await self._consume_code(session, user.id, purpose, code)
        if user is None or row is None:
            await self.guard.code_failed(session, email, now)
            failed = "verify_failed" if purpose == VERIFY else "password_reset_failed"
            audit.record(session, failed, user_id=user.id if user else None, email=email, ip=ip)
            await session.commit()
            raise InvalidCode
        return user, row

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    async def _user_by_email(
        session: AsyncSession, email: str, *, for_update: bool = False
    ) -> User | None:
        query = select(User).where(User.email == email)
        if for_update:
            query = query.with_for_update()
        return (await session.execute(query)).scalar_one_or_none()

    def _cooled_down(self, user: User, now: datetime) -> bool:
        cooldown = timedelta(seconds=self.settings.resend_cooldown_seconds)
        return user.last_mail_at is None or now - user.last_mail_at >= cooldown

    def _send_code(
        self,
        session: AsyncSession,
        user: User,
        purpose: str,
        locale: str,
        now: datetime,
        password_hash: str | None = None,
    ) -> None:
        code = new_code()
        expires_at = now + timedelta(seconds=self.settings.code_ttl_seconds)
        session.add(
            OneTimeCode(
                user_id=user.id,
                purpose=purpose,
                code_hmac=self.codes.digest(user.id, purpose, code),
                password_hash=password_hash,
                expires_at=expires_at,
                created_at=now,
            )
        )
        user.last_mail_at = now
        add_event(
            session,
            EmailCodeEvent(
                type=EmailEventType(purpose),
                email=user.email,
                code=code,
                expires_at=expires_at,
                locale=locale,
            ),
        )

    @staticmethod
    async def _active_code(
        session: AsyncSession, user_id: uuid.UUID, purpose: str
    ) -> OneTimeCode | None:
        query = (
            select(OneTimeCode)
            .where(
                OneTimeCode.user_id == user_id,
                OneTimeCode.purpose == purpose,
                OneTimeCode.consumed_at.is_(None),
            )
            .order_by(OneTimeCode.id.desc())
            .limit(1)
        )
        return (await session.execute(query)).scalar_one_or_none()

    @staticmethod
    async def _retire_codes(
        session: AsyncSession, user_id: uuid.UUID, purpose: str, now: datetime
    ) -> None:
        await session.execute(
            update(OneTimeCode)
            .where(
                OneTimeCode.user_id == user_id,
                OneTimeCode.purpose == purpose,
                OneTimeCode.consumed_at.is_(None),
            )
            .values(consumed_at=now)
        )

    async def _consume_code(
        self, session: AsyncSession, user_id: uuid.UUID, purpose: str, code: str
    ) -> OneTimeCode | None:
        """The matching live code, now used up; or None (and one try spent)."""
        row = await self._active_code(session, user_id, purpose)
        now = utcnow()
        if row is None or row.expires_at <= now:
            return None
        # Spend a try before comparing, atomically: parallel guesses cannot exceed the budget.
        attempts = (
            await session.execute(
                update(OneTimeCode)
                .where(
                    OneTimeCode.id == row.id,
                    OneTimeCode.consumed_at.is_(None),
                    OneTimeCode.attempts < self.settings.code_max_attempts,
                )
                .values(attempts=OneTimeCode.attempts + 1)
                .returning(OneTimeCode.attempts)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
        if attempts is None:
            return None
        matches = self.codes.matches(row.code_hmac, user_id, purpose, code)
        if matches or attempts >= self.settings.code_max_attempts:
            # Used, or burned by its last wrong try.
            await session.execute(
                update(OneTimeCode)
                .where(OneTimeCode.id == row.id)
                .values(consumed_at=now)
                .execution_options(synchronize_session=False)
            )
        return row if matches else None
