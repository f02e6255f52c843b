"""Account self-service for a signed-in user: change the password, change the email address,
delete the account.

Each asks for the current password again, and a wrong one counts toward the address's
login lockout, so a stolen access token cannot be used to guess it faster than a login
could. An email change takes effect only when the code sent to the new address comes back;
an address that already has an account gets the same answer as a free one, and no code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import audit, events
from auth_service.accounts import EMAIL_CHANGE, LOGIN_CODE, RESET, Accounts
from auth_service.errors import (
    AccountLocked,
    EmailTaken,
    EmailUnchanged,
    InvalidCode,
    InvalidPassword,
    NotAuthenticated,
    RateLimited,
)
from auth_service.models import User, UserSession
from auth_service.tokens import TokenPair
from auth_service.totp import drop_challenges
from auth_service.user_sessions import Caller, Client, end_others, end_sessions
from common.clock import utcnow
from common.events import EmailEventType, UserEventType


@dataclass
class SelfService:
    accounts: Accounts

    async def change_password(
        self, caller: Caller, current: str, new: str, locale: str | None, ip: str | None = None
    ) -> None:
        """Set a new password and end every other session; a notice goes to the address."""
        a, user = self.accounts, caller.user
        await self.check_password(user, current, ip, "password_change")
        new_hash = await a.passwords.hash(new)
        async with a.sessions.begin() as session:
            # Only over the password just checked: a reset that committed during the
            # hashes ended this session too, and must not be undone by it.
            changed = await session.execute(
                update(User)
                .where(User.id == user.id, User.password_hash == user.password_hash)
                .values(password_hash=new_hash, locale=locale or User.locale)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                raise InvalidPassword  # leaving the block rolls back
            await end_others(session, caller)
            await drop_challenges(session, user.id)
            # A reset code in flight would undo the change: it was asked for before it.
            await a.codes.retire(session, user.id, RESET, utcnow())
            audit.record(session, "password_changed", user_id=user.id, email=user.email, ip=ip)
            notice = EmailEventType.PASSWORD_CHANGED_NOTICE
            events.email_notice(session, notice, user.email, user.language(locale))
            events.user_event(
                session, UserEventType.PASSWORD_CHANGED, user.id, kept_session=caller.session_id
            )
        a.relay.notify()

    async def request_email_change(
        self,
        caller: Caller,
        new_email: str,
        password: str,
        locale: str | None,
        ip: str | None = None,
    ) -> None:
        """Email a code to `new_email`, unless another account has it (then nothing is sent,
        and the answer is the same). The resend cooldown runs either way; within it the
        caller is told when to ask again (429), which says nothing about other accounts:
        a silent answer left someone who changed address soon after signing up waiting
        for a code that was never sent."""
        a, user = self.accounts, caller.user
        if new_email == user.email:
            raise EmailUnchanged
        await self.check_password(user, password, ip, "email_change")
        async with a.sessions.begin() as session:
            row = await self.checked_row(session, user)
            now = utcnow()
            if not a.cooled_down(row, now):
                raise RateLimited(a.cooldown_left(row, now))
            row.last_mail_at = now
            language = row.language(locale)
            taken = await a.user_by_email(session, new_email) is not None
            audit.record(
                session,
                "email_change_requested",
                user_id=user.id,
                email=user.email,
                ip=ip,
                taken=taken,
            )
            if taken:
                return
            await a.codes.retire(session, user.id, EMAIL_CHANGE, now)
            a.send_code(session, row, EMAIL_CHANGE, language, now, new_email=new_email)
        a.relay.notify()

    async def confirm_email_change(
        self, caller: Caller, code: str, locale: str | None, client: Client
    ) -> TokenPair:
        """Move the account to the address the code went to (if still free), tell the old
        address, and replace the caller's tokens."""
        a = self.accounts
        async with a.sessions() as session:
            user, row = await a.redeem(session, caller.user.email, EMAIL_CHANGE, code, client.ip)
            if user.id != caller.user.id or row.new_email is None:
                raise InvalidCode  # the address moved under us; cannot happen in one request
            old, new = user.email, row.new_email
            if await a.user_by_email(session, new) is not None:
                await session.commit()  # the code is used up all the same
                raise EmailTaken
            user.email = new  # still verified: the code proved the new mailbox
            language = user.language(locale)
            try:  # written now: reissue's queries would flush it outside this try
                await session.flush()
            except IntegrityError as exc:  # another account took the address meanwhile
                raise EmailTaken from exc
            # Codes mailed to the old address no longer open the account: whoever reads
            # that mailbox now (maybe the reason for the move) could use them until expiry.
            now = utcnow()
            for purpose in (RESET, LOGIN_CODE):
                await a.codes.retire(session, user.id, purpose, now)
            audit.record(session, "email_changed", user_id=user.id, email=new, ip=client.ip)
            events.email_notice(session, EmailEventType.EMAIL_CHANGED_NOTICE, old, language)
            events.user_event(session, UserEventType.EMAIL_CHANGED, user.id)
            grant = await a.tokens.reissue(session, user, caller.session_id)
            await session.commit()
        a.relay.notify()
        return grant.sign()

    async def delete(self, caller: Caller, password: str, ip: str | None = None) -> None:
        """Remove the account and everything hanging off it (codes, sessions, tokens); keep
        the audit trail without the address; announce user.deleted."""
        a, user = self.accounts, caller.user
        await self.check_password(user, password, ip, "delete")
        async with a.sessions.begin() as session:
            row = await self.checked_row(session, user)
            await audit.forget_addresses(session, [row.id], [row.email])
            audit.record(session, "account_deleted", user_id=row.id, ip=ip)
            # The address, so the mailer can forget its history; nothing else about it.
            events.user_event(session, UserEventType.DELETED, row.id, email=row.email)
            # Ended first, as every end is: its applications are told (backchannel.py).
            await end_sessions(session, UserSession.user_id == row.id)
            await session.delete(row)  # codes, sessions and tokens go by ON DELETE CASCADE
        a.relay.notify()

    @staticmethod
    async def checked_row(session: AsyncSession, user: User) -> User:
        """The account's row, locked (a row lock on PostgreSQL; on SQLite the transaction
        began IMMEDIATE, see common/sqlite.py) after `check_password`:
        NotAuthenticated if a parallel delete won, InvalidPassword if a reset or change
        replaced the password that was just checked (it ended this session too)."""
        row = await session.get(User, user.id, with_for_update=True)
        if row is None:
            raise NotAuthenticated
        if row.password_hash != user.password_hash:
            raise InvalidPassword
        return row

    async def check_password(self, user: User, password: str, ip: str | None, action: str) -> None:
        """InvalidPassword unless `password` is the account's; a wrong one counts toward
        the address's lockout, and a locked address is refused before any hashing."""
        a = self.accounts
        async with a.sessions() as session:
            await a.guard.check_login(session, user.email, utcnow())
        ok, _ = await a.passwords.verify(password, user.password_hash)
        if ok:
            return
        async with a.sessions.begin() as session:
            failure = await a.guard.login_failed(session, user.email, utcnow())
            audit.record(
                session, "reauth_failed", user_id=user.id, email=user.email, ip=ip, action=action
            )
            if seconds := failure.locked_for:
                audit.record(
                    session, "lockout", user_id=user.id, email=user.email, ip=ip, seconds=seconds
                )
        if failure.already_locked:
            raise AccountLocked(failure.already_locked)
        raise InvalidPassword
