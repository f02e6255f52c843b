"""Password-less sign-in by an emailed code, through the same outbox, mailer and code rules
as verification: single use, expiry, tries per code, the per-address budget, the resend
cooldown.

Only verified, enabled accounts get a code: an unverified account may have been
pre-registered by someone else, with their password, and a code login must not verify it
for them. Unknown, unverified and disabled addresses get the same answer and no email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from auth_service import audit
from auth_service.accounts import LOGIN_CODE, Accounts
from auth_service.errors import AccountDisabled, MfaRequired
from auth_service.tokens import EMAILED_CODE, TokenPair
from auth_service.totp import has_factor, open_challenge
from auth_service.user_sessions import Client
from common.clock import utcnow


@dataclass
class CodeLogin:
    accounts: Accounts

    async def request(self, email: str, locale: str, ip: str | None = None) -> None:
        a = self.accounts
        async with a.sessions.begin() as session:
            user = await a.user_by_email(session, email, for_update=True)
            now = utcnow()
            if user is None or not user.email_verified or user.disabled:
                return
            if not a.cooled_down(user, now):
                return
            await a.codes.retire(session, user.id, LOGIN_CODE, now)
            a.send_code(session, user, LOGIN_CODE, locale, now)
            audit.record(session, "login_code_requested", user_id=user.id, email=email, ip=ip)
        a.relay.notify()

    async def verify(self, email: str, code: str, client: Client) -> TokenPair:
        a = self.accounts
        async with a.sessions() as session:
            user, _ = await a.redeem(session, email, LOGIN_CODE, code, client.ip)
            if user.disabled:  # disabled after the code was sent; the code is used up
                await session.commit()
                raise AccountDisabled
            if await session.scalar(select(has_factor(user.id))):
                ttl = timedelta(seconds=a.settings.mfa_challenge_seconds)
                second = await open_challenge(session, user.id, "code", utcnow(), ttl)
                audit.record(
                    session,
                    "mfa_challenged",
                    user_id=user.id,
                    email=email,
                    ip=client.ip,
                    method="code",
                )
                await session.commit()
                raise MfaRequired(second.token, second.expires_in)
            audit.record(
                session, "login_ok", user_id=user.id, email=email, ip=client.ip, method="code"
            )
            grant = a.tokens.issue(session, user, client, (EMAILED_CODE,))
            await session.commit()
        return grant.sign()
