"""Sign-up, verification, login and password reset: the account rules, free of HTTP.

Every email is written to the outbox in the same transaction as the code it carries, so an
accepted request always has its email on disk, whatever the broker is doing. A sign-up is
on disk from its answer on as a `signup_requests` row, which becomes the account, the code
and the email in one transaction, once (`finish_signup`, `resume_signups`). The code
helpers here (`send_code`, `redeem`, the resend cooldown) serve the other code flows too:
login by code (`login_codes.py`) and email change (`account.py`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service import audit, events
from auth_service.codes import Codes
from auth_service.config import AuthSettings
from auth_service.errors import (
    AccountDisabled,
    AccountLocked,
    EmailNotVerified,
    InvalidCode,
    InvalidCredentials,
    MfaRequired,
)
from auth_service.models import Base, OneTimeCode, SignupRequest, User
from auth_service.outbox import OutboxRelay
from auth_service.passwords import PasswordHasher
from auth_service.refresh import RefreshTokens
from auth_service.throttle import AddressGuard
from auth_service.tokens import EMAILED_CODE, PASSWORD, TokenPair
from auth_service.totp import drop_challenges, has_factor, open_challenge
from auth_service.user_sessions import Client
from common.clock import utcnow
from common.db import DatabaseUnreachable, engine_of
from common.events import EmailEventType, UserEventType

log = logging.getLogger(__name__)

SIGNUPS_LEFT = Counter(
    "auth_signups_left_total", "Accepted sign-ups whose first try failed, left for the resume"
)
SIGNUPS_RESUMED = Counter(
    "auth_signups_resumed_total", "Accepted sign-ups carried out by the resume, not their request"
)
SIGNUPS_FAILED = Counter(
    "auth_signups_failed_total",
    "Accepted sign-ups given up after failing for SIGNUP_GIVE_UP_AFTER (in the audit log)",
)

# The login's Core statements, built once.
_USERS = Base.metadata.tables[User.__tablename__]
_CREDENTIALS = select(
    _USERS.c.id,
    _USERS.c.password_hash,
    _USERS.c.email_verified,
    _USERS.c.disabled_at,
    _USERS.c.roles,
).where(_USERS.c.email == bindparam("email"))
# The first write of a successful login: the account still has the hash just verified and
# is not disabled, since a reset, a password change or an admin may have acted during the
# hash (each ends every session, which this login must not outlive). Writing, not reading,
# takes the row lock on PostgreSQL and SQLite's write lock at once; the value written is
# the upgraded hash, or the same one.
_CLAIM = (
    update(_USERS)
    .where(
        _USERS.c.id == bindparam("user"),
        _USERS.c.password_hash == bindparam("verified"),
        _USERS.c.disabled_at.is_(None),
    )
    .values(password_hash=bindparam("hash"))
)
# Whether it has two-step sign-in: read once the claim holds the account's lock, by a
# statement of its own. An app confirmed during the hash takes the same lock, and on
# PostgreSQL only a statement begun after that confirmation commits sees it (a subquery
# of the claim's RETURNING still read the snapshot from before its wait).
_TWO_STEP = select(has_factor(bindparam("user")))

VERIFY = EmailEventType.EMAIL_VERIFICATION.value
RESET = EmailEventType.PASSWORD_RESET.value
LOGIN_CODE = EmailEventType.LOGIN_CODE.value
EMAIL_CHANGE = EmailEventType.EMAIL_CHANGE.value
# How often a repeat sign-up checks its password against the pending one before it
# treats a moving target (sign-ups racing for the address) as a different password.
SIGNUP_CHECKS = 3
# Sign-ups read at a time by the resume, oldest first.
RESUME_BATCH = 100
# A sign-up the resume has seen fail for this long, with errors that are not the database's
# trouble (an unreachable, lost or locked database, a timeout), is given up: recorded as
# failed (audit log, metric) instead of tried for ever.
SIGNUP_GIVE_UP_AFTER = timedelta(days=1)
# The database's trouble, not the sign-up's: tried again however long it lasts.
TRANSIENT = (
    DatabaseUnreachable,
    OperationalError,
    InterfaceError,
    PoolTimeout,
    TimeoutError,
    OSError,
)
# How long shutdown waits for the sign-ups being carried out.
SHUTDOWN_WAIT_SECONDS = 10.0
# What a wrong try at each purpose's code is audited as.
FAILED = {
    VERIFY: "verify_failed",
    RESET: "password_reset_failed",
    LOGIN_CODE: "login_code_failed",
    EMAIL_CHANGE: "email_change_failed",
}


@dataclass
class Accounts:
    settings: AuthSettings
    sessions: async_sessionmaker[AsyncSession]
    passwords: PasswordHasher
    codes: Codes
    tokens: RefreshTokens
    relay: OutboxRelay
    guard: AddressGuard
    _finishing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    # Sign-ups the resume saw fail for a reason of their own: since when (this process's
    # sighting: a new relay leader starts counting again, which only gives up later).
    _failing: dict[int, datetime] = field(default_factory=dict, init=False, repr=False)

    async def accept_signup(
        self, email: str, password: str, locale: str, ip: str | None = None, send: bool = True
    ) -> SignupRequest:
        """What every sign-up costs, whatever the address's state: one hash and one row.
        The answer goes out once the row is committed; `finish_signup` carries it out.
        With `send` false (the address is over its budget of sign-ups) nothing will be
        created or sent, but a different password still disputes the pending one."""
        password_hash = await self.passwords.hash(password)
        accepted = SignupRequest(
            email=email,
            password_hash=password_hash,
            locale=locale,
            ip=ip,
            send=send,
            accepted_at=utcnow(),
        )
        async with self.sessions.begin() as session:
            session.add(accepted)
        return accepted

    def finish_soon(self, accepted: SignupRequest, password: str) -> asyncio.Task[None]:
        """Carry out an accepted sign-up beside the request, which answers without it. If
        it fails, or the process stops first, `resume_signups` carries it out later."""
        task = asyncio.create_task(self._finish_or_leave(accepted, password), name="signup")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def _finish_or_leave(self, accepted: SignupRequest, password: str) -> None:
        try:
            await self.finish_signup(accepted, password)
        except Exception as exc:  # the database is away, say: the row stays for the resume
            SIGNUPS_LEFT.inc()
            # The type only: a constraint's text names the address.
            log.error(
                "sign-up %d not carried out (%s); it is resumed %.0f s after it was accepted",
                accepted.id,
                type(exc).__name__,
                self.settings.signup_resume_after_seconds,
            )

    async def finished(self, within: float = SHUTDOWN_WAIT_SECONDS) -> None:
        """Wait, at shutdown, for the sign-ups being carried out; those still waiting (for
        a lock held elsewhere, say) after `within` seconds are cancelled, and resumed later."""
        if not self._finishing:
            return
        _, late = await asyncio.wait(set(self._finishing), timeout=within)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=within)  # a rollback the database never answers
            log.warning("%d sign-ups left for the resume at shutdown", len(late))

    async def resume_signups(self) -> int:
        """Carry out the sign-ups accepted AUTH_SIGNUP_RESUME_AFTER_SECONDS ago or earlier
        and not yet finished: their process stopped, or their first try failed. Only
        their hash is left, so a pending account's password cannot be compared with
        theirs and counts as a different one (disputed). How many were resumed."""
        cutoff = utcnow() - timedelta(seconds=self.settings.signup_resume_after_seconds)
        done, after, listed = 0, 0, set()
        try:
            while requests := await self._left(cutoff, after):
                for accepted in requests:
                    listed.add(accepted.id)
                    try:
                        done += await self.finish_signup(accepted, None)
                    except DatabaseUnreachable:
                        raise  # the next pass tries them all again
                    except Exception as exc:
                        await self._failed(accepted, exc)
                    else:
                        self._failing.pop(accepted.id, None)
                after = requests[-1].id
            # Those carried out or given up elsewhere are no longer watched.
            self._failing = {k: v for k, v in self._failing.items() if k in listed}
        finally:
            if done:
                SIGNUPS_RESUMED.inc(done)
                log.warning("resumed %d sign-ups their own request did not carry out", done)
        return done

    async def _failed(self, accepted: SignupRequest, exc: Exception) -> None:
        """A resumed sign-up failed: left for the next pass, or given up once it has
        failed for SIGNUP_GIVE_UP_AFTER for a reason of its own."""
        error = type(exc).__name__  # the type only: a constraint's text names the address
        own = not isinstance(exc, TRANSIENT) and not (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        seen = self._failing.get(accepted.id)
        if own and seen is None:
            self._failing[accepted.id] = utcnow()  # never given up at its first sighting
        elif own and seen is not None and utcnow() - seen >= SIGNUP_GIVE_UP_AFTER:
            try:
                await self._give_up(accepted, error)
            except DatabaseUnreachable:
                raise
            except Exception as failure:  # the next pass tries again; the rest go on
                log.error("sign-up %d not given up (%s)", accepted.id, type(failure).__name__)
            else:
                self._failing.pop(accepted.id, None)
                return
        log.error("sign-up %d not resumed (%s); the next pass tries again", accepted.id, error)

    async def _give_up(self, accepted: SignupRequest, error: str) -> None:
        """The sign-up's row goes, and its failure is recorded where an operator looks:
        the audit log (with the address, as every sign-up's is), the metric, the log."""
        async with self.sessions.begin() as session:
            claimed = await session.execute(
                delete(SignupRequest)
                .where(SignupRequest.id == accepted.id)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount == 0:  # type: ignore[attr-defined]
                return  # carried out or given up by another pass meanwhile
            audit.record(
                session, "signup_failed", email=accepted.email, ip=accepted.ip, error=error
            )
        SIGNUPS_FAILED.inc()
        log.error(
            "sign-up %d given up: failing (%s) for %s; recorded in the audit log as signup_failed",
            accepted.id,
            error,
            SIGNUP_GIVE_UP_AFTER,
        )

    async def _left(self, cutoff: datetime, after: int) -> list[SignupRequest]:
        async with self.sessions() as session:
            left = await session.scalars(
                select(SignupRequest)
                .where(SignupRequest.accepted_at <= cutoff, SignupRequest.id > after)
                .order_by(SignupRequest.id)
                .limit(RESUME_BATCH)
            )
            return list(left)

    async def finish_signup(self, accepted: SignupRequest, password: str | None) -> bool:
        """Carry out an accepted sign-up, once however many processes try: whether this
        call did (False: another had). `password` is its plaintext, or None where only
        the hash is left."""
        for attempt in range(1, SIGNUP_CHECKS + 1):
            # An unverified address signed up again: is it the same password as the one
            # verification would make active? (One more verify on that branch only, after
            # the answer.) Checked outside the transaction, so no lock is held through a
            # hash; if the answer is stale inside (a sign-up in between), it is checked
            # again, and after that counts as another password.
            checked, same = None, True
            async with self.sessions() as session:
                user = await self.user_by_email(session, accepted.email)
                if user is not None and not user.email_verified:
                    checked = await self._pending_password(session, user)
            if checked is not None:
                same = password is not None and (await self.passwords.verify(password, checked))[0]
            last = attempt == SIGNUP_CHECKS
            try:
                carried = await self._signup(accepted, checked, same, last, password is None)
            except IntegrityError:
                # A parallel first sign-up for the address won the insert (PostgreSQL; on
                # SQLite the lock orders them): check against its password, as a repeat.
                if last:
                    raise
                continue
            if carried is not None:
                self.relay.notify()
                return carried
        raise AssertionError("the last try decides")  # pragma: no cover

    async def _pending_password(self, session: AsyncSession, user: User) -> str:
        """The hash verification would make the account's password: the live code's, or
        (a resent code carries the one it replaced, maybe none) the account's own."""
        latest = await self.codes.latest(session, user.id, VERIFY)
        if latest is not None and latest.password_hash is not None:
            return latest.password_hash
        return user.password_hash

    async def _signup(
        self,
        accepted: SignupRequest,
        checked: str | None,
        same: bool,
        last: bool,
        resumed: bool,
    ) -> bool | None:
        """None, having changed nothing, if the pending password is no longer the one
        checked (and this is not the `last` try); else whether this call carried it out."""
        email, locale, ip = accepted.email, accepted.locale, accepted.ip
        how = {"resumed": True} if resumed else {}  # for the audit trail
        async with self.sessions.begin() as session:
            user = await self.user_by_email(session, email, for_update=True)
            stale = False
            if user is not None and not user.email_verified:
                stale = await self._pending_password(session, user) != checked
                if stale and not last:
                    return None
            # Its row goes in this transaction: whoever deletes it carries it out.
            claimed = await session.execute(
                delete(SignupRequest)
                .where(SignupRequest.id == accepted.id)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount == 0:  # type: ignore[attr-defined]
                return False  # carried out already, by its task or a resume
            now = utcnow()
            if user is None and not accepted.send:
                return True
            if user is None:
                user = User(
                    email=email, password_hash=accepted.password_hash, roles=[], locale=locale
                )
                session.add(user)
                await session.flush()
                self.send_code(session, user, VERIFY, locale, now, accepted.password_hash)
                audit.record(session, "signup", user_id=user.id, email=email, ip=ip, **how)
                events.user_event(session, UserEventType.SIGNED_UP, user.id)
                return True
            disputed = not user.email_verified and (stale or not same)
            if disputed:
                await self._dispute_password(session, user)
            if not accepted.send or not self.cooled_down(user, now):
                return True
            if user.email_verified:
                user.last_mail_at = now
                events.email_notice(session, EmailEventType.ACCOUNT_EXISTS, user.email, locale)
                audit.record(
                    session, "signup", user_id=user.id, email=email, ip=ip, exists=True, **how
                )
                return True
            await self.codes.retire(session, user.id, VERIFY, now)
            pending = None if disputed else accepted.password_hash
            self.send_code(session, user, VERIFY, locale, now, pending)
            audit.record(
                session,
                "signup",
                user_id=user.id,
                email=email,
                ip=ip,
                again=True,
                disputed=disputed,
                **how,
            )
        return True

    async def _dispute_password(self, session: AsyncSession, user: User) -> None:
        """Two sign-ups for one unverified address with different passwords: neither
        caller has shown they read its mail, so neither password may become the account's
        (else a stranger's code, the newest in your inbox, would make their password
        yours). Verification then proves the mailbox and signs in without a password;
        its owner sets one with "forgot password"."""
        await self.codes.drop_passwords(session, user.id, VERIFY)
        user.password_hash = self.passwords.unusable_hash

    async def resend_verification(self, email: str, locale: str) -> None:
        async with self.sessions.begin() as session:
            user = await self.user_by_email(session, email, for_update=True)
            now = utcnow()
            if user is None or user.email_verified or not self.cooled_down(user, now):
                return
            latest = await self.codes.latest(session, user.id, VERIFY)
            await self.codes.retire(session, user.id, VERIFY, now)
            pending = latest.password_hash if latest is not None else None
            self.send_code(session, user, VERIFY, locale, now, pending)
        self.relay.notify()

    async def verify_email(self, email: str, code: str, client: Client) -> TokenPair:
        ip = client.ip
        async with self.sessions() as session:
            user, row = await self.redeem(session, email, VERIFY, code, ip)
            # A sign-up answered and not yet carried out waits for the account's lock, which
            # this holds; it may carry another password, so, as in a dispute, none becomes
            # the account's (else an old code would beat the dispute it was due).
            waiting = await session.scalar(select(exists().where(SignupRequest.email == email)))
            if waiting:
                user.password_hash = self.passwords.unusable_hash
            elif row.password_hash is not None:
                user.password_hash = row.password_hash
            user.email_verified = True
            detail = {"disputed": True} if waiting else {}
            audit.record(session, "verify_ok", user_id=user.id, email=email, ip=ip, **detail)
            events.user_event(session, UserEventType.VERIFIED, user.id)
            if user.disabled:  # the mailbox is proven all the same; no session, though
                await session.commit()
                raise AccountDisabled
            grant = self.tokens.issue(session, user, client, (EMAILED_CODE,))
            await session.commit()
        return grant.sign()

    async def login(self, email: str, password: str, client: Client) -> TokenPair:
        """The busiest route after refresh: Core statements on plain connections (no ORM
        session), one read before the hash and one transaction after it, and the signature
        after the commit. A wrong password takes the ORM path of the other failures."""
        ip = client.ip
        engine = engine_of(self.sessions)
        async with engine.connect() as conn:
            # A locked address answers at once, known or not: no hash, no enumeration.
            await self.guard.check_login(conn, email, utcnow())
            user = (await conn.execute(_CREDENTIALS, {"email": email})).one_or_none()
        if user is None:
            await self.passwords.verify_dummy(password)
            ok, upgraded_hash = False, None
        else:
            ok, upgraded_hash = await self.passwords.verify(password, user.password_hash)
        if not ok:
            async with self.sessions.begin() as session:
                failure = await self.guard.login_failed(session, email, utcnow())
                user_id = user.id if user else None
                audit.record(session, "login_failed", user_id=user_id, email=email, ip=ip)
                if seconds := failure.locked_for:
                    audit.record(
                        session, "lockout", user_id=user_id, email=email, ip=ip, seconds=seconds
                    )
            if failure.already_locked:  # as a right guess would be answered now
                raise AccountLocked(failure.already_locked)
            raise InvalidCredentials
        assert user is not None
        if not user.email_verified:
            raise EmailNotVerified
        if user.disabled_at is not None:
            raise AccountDisabled
        async with engine.begin() as conn:
            verified = user.password_hash
            claim = {"user": user.id, "verified": verified, "hash": upgraded_hash or verified}
            claimed = await conn.execute(_CLAIM, claim)
            if claimed.rowcount != 1:  # no longer its password, or disabled: no session
                raise InvalidCredentials  # leaving the block rolls back
            two_step = bool(await conn.scalar(_TWO_STEP, {"user": user.id}))
            # Again, now: guesses in flight when the address was locked (all of them read
            # "not locked" before their hash) must not get in past the lock.
            has_failures = await self.guard.check_login(conn, email, utcnow(), lock=True)
            if has_failures:
                await self.guard.login_succeeded(conn, email)
            rehashed = bool(upgraded_hash)
            if two_step:  # a session only once the second step is passed too
                ttl = timedelta(seconds=self.settings.mfa_challenge_seconds)
                second = await open_challenge(conn, user.id, "password", utcnow(), ttl)
                event = "mfa_challenged"
            else:
                grant = await self.tokens.open(conn, user.id, user.roles, client, (PASSWORD,))
                event = "login_ok"
            entry = audit.entry(event, user_id=user.id, email=email, ip=ip, rehashed=rehashed)
            await conn.execute(audit.INSERT, entry)
        if two_step:
            raise MfaRequired(second.token, second.expires_in)
        return grant.sign()

    async def forgot_password(self, email: str, locale: str, ip: str | None = None) -> None:
        async with self.sessions.begin() as session:
            user = await self.user_by_email(session, email, for_update=True)
            now = utcnow()
            # Unverified accounts sign up again instead; the answer is the same either way.
            if user is None or not user.email_verified or not self.cooled_down(user, now):
                return
            await self.codes.retire(session, user.id, RESET, now)
            self.send_code(session, user, RESET, locale, now)
            audit.record(session, "password_reset_requested", user_id=user.id, email=email, ip=ip)
        self.relay.notify()

    async def reset_password(
        self, email: str, code: str, new_password: str, ip: str | None = None
    ) -> None:
        # The code is looked at before the hash and redeemed after it. A wrong code is
        # answered without a hash, so its time (padded to the floor) owes nothing to the
        # hash queue; the redemption, in the transaction that sets the password, checks
        # the code again and spends its try. Over the address's budget of wrong codes, no
        # code is looked at, right or wrong: a hash for the right one only would tell it.
        async with self.sessions() as session:
            await self.guard.check_codes(session, email, utcnow())
            user = await self.user_by_email(session, email)
            right = (
                user is not None
                and user.email_verified
                and await self.codes.would_match(session, user.id, RESET, code)
            )
        new_hash = await self.passwords.hash(new_password) if right else None
        async with self.sessions() as session:
            user, _ = await self.redeem(session, email, RESET, code, ip)
            if new_hash is None:  # became right between the look and now: take it as wrong
                raise InvalidCode  # leaving the block rolls the redemption back
            user.password_hash = new_hash
            # Whoever held a session (maybe the reason for the reset) is logged out.
            await RefreshTokens.revoke_all(session, user.id)
            await drop_challenges(session, user.id)
            audit.record(session, "password_reset", user_id=user.id, email=email, ip=ip)
            events.user_event(session, UserEventType.PASSWORD_CHANGED, user.id)
            await session.commit()
        self.relay.notify()

    async def redeem(
        self, session: AsyncSession, email: str, purpose: str, code: str, ip: str | None
    ) -> tuple[User, OneTimeCode]:
        """The account and its matching live code, now used up. Otherwise the wrong try is
        recorded against the address (known or not), committed, and InvalidCode raised.
        A verification code only works while the address is unverified; any other code only
        once it is verified."""
        now = utcnow()
        user = await self.user_by_email(session, email, for_update=True)
        # After the account's lock, not before: a code in flight while other guesses used up
        # the address's budget waits for them here, then sees the budget spent.
        await self.guard.check_codes(session, email, now)
        row = None
        if user is not None and user.email_verified == (purpose != VERIFY):
            row = await self.codes.consume(session, user.id, purpose, code)
        if user is None or row is None:
            await self.guard.code_failed(session, email, now)
            audit.record(
                session, FAILED[purpose], user_id=user.id if user else None, email=email, ip=ip
            )
            await session.commit()
            raise InvalidCode
        return user, row

    # -- helpers the other code flows share -----------------------------------------------

    @staticmethod
    async def user_by_email(
        session: AsyncSession, email: str, *, for_update: bool = False
    ) -> User | None:
        query = select(User).where(User.email == email)
        if for_update:
            query = query.with_for_update()
        return (await session.execute(query)).scalar_one_or_none()

    def cooled_down(self, user: User, now: datetime) -> bool:
        return self.cooldown_left(user, now) <= 0

    def cooldown_left(self, user: User, now: datetime) -> float:
        """Seconds until the address may be sent another email (0 or less: now)."""
        if user.last_mail_at is None:
            return 0.0
        cooldown = timedelta(seconds=self.settings.resend_cooldown_seconds)
        return (user.last_mail_at + cooldown - now).total_seconds()

    def send_code(
        self,
        session: AsyncSession,
        user: User,
        purpose: str,
        locale: str,
        now: datetime,
        password_hash: str | None = None,
        new_email: str | None = None,
    ) -> None:
        """A fresh code (retire older ones first), emailed to the account's address, or to
        `new_email` for an email change; it starts the address's resend cooldown."""
        issued = self.codes.issue(session, user.id, purpose, now, password_hash, new_email)
        user.last_mail_at = now
        kind = EmailEventType(purpose)
        to = new_email or user.email
        events.email_code(session, kind, to, issued.code, issued.expires_at, locale)
