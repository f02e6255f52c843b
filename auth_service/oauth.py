"""OAuth 2.0's authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636) and OpenID
Connect's ID token, for the applications in AUTH_OAUTH_CLIENTS.

1. An application sends the person's browser to the authorization endpoint (the web front
   end's /oauth/authorize) with its client_id, one of its registered redirect URIs and the
   S256 challenge of a verifier it keeps to itself.
2. The web front end asks `client` whether that client and redirect URI go together (if
   not, it must send the browser nowhere), signs the person in, and asks `authorize`, as
   that person, for a code: random, kept as its SHA-256, good for a minute. For a client
   that is not trusted, `authorize` wants the person's yes: given just now (the page asked
   them), or remembered from before for these scopes where the code can reach that client
   alone (`assured`); they take it back with `revoke`.
3. The application trades the code at the token endpoint (`redeem`) with the verifier,
   the same redirect URI and, for a confidential client, its secret or an assertion signed
   with its key (`private_key_jwt`, client_assertions.py): a new session (listed
   among the person's, named after the application), its token pair and, with the
   `openid` scope, an ID token for the application (`aud` its client_id, the `nonce` it
   sent, `auth_time` and `amr` of the sign-in the person made at the web front end). A
   code asked for with a `dpop_jkt`, or pushed with a DPoP proof (RFC 9449 §10), is
   redeemed only with a proof by that key.

A code is redeemed once. A second redemption is refused, and with the right verifier it
also ends the session the first one opened: someone holds both, and whoever redeemed first
may not be the application (a leaked code alone ends nothing). Every failure to redeem is
the same `InvalidGrant` (`KeyBoundCode`, which says why, for a code bound to a key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service import audit, pushed
from auth_service.accounts import Accounts
from auth_service.client_assertions import (
    ClientKey,
    ClientKeySets,
    header_kid,
    signing_keys,
    spend,
    verified,
)
from auth_service.config import SERVICE_SCOPES, OAuthClient, Scope
from auth_service.errors import (
    ClientRefused,
    ConsentNotFound,
    ConsentRequired,
    InvalidCodeGrant,
    KeyBoundCode,
    LogoutRefused,
    NoScope,
    NotAuthenticated,
    PushedRequestRequired,
    SignInTooOld,
    UnknownClient,
)
from auth_service.models import Base, OAuthCode, OAuthConsent, User, UserSession
from auth_service.passkeys import b64url
from auth_service.tokens import TokenPair
from auth_service.user_sessions import Caller, Client, end_sessions
from common import dpop
from common.clock import utcnow
from common.db import upsert

CODE_SECONDS = 60
_CONSENTS = Base.metadata.tables[OAuthConsent.__tablename__]
# What may be granted (other requested scopes are left out): an ID token, the address in
# it, and the films API (films refuses an application's token without it).
SCOPES: tuple[str, ...] = get_args(Scope)


def s256(verifier: str) -> str:
    """RFC 7636 §4.2's S256 challenge of a verifier."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


# An http redirect URI on a loopback address: its host, port and the rest (path and query;
# no fragment, no whitespace or control characters).
LOOPBACK_URI = re.compile(
    r"http://(127\.0\.0\.1|\[::1\])(?::([1-9][0-9]{0,4}))?([/?][^#\x00-\x20\x7f]*)?"
)


def registered(uri: str, given: str) -> bool:
    """Whether `given` is the registered `uri`: the same string (RFC 6749 §3.1.2.3 as
    OAuth 2.1 has it), or for http on 127.0.0.1 or [::1] the same string but for the port,
    where a native app listens on whatever port it got when it started (RFC 8252 §7.3)."""
    if given == uri:
        return True
    ours, theirs = LOOPBACK_URI.fullmatch(uri), LOOPBACK_URI.fullmatch(given)
    if ours is None or theirs is None or int(theirs.group(2) or 80) > 65535:
        return False
    return ours.group(1, 3) == theirs.group(1, 3)


def granted(scope: str, allowed: Sequence[str] | None = None) -> str:
    """The scopes of `scope` that are given (of those `allowed`, None: any), space-
    separated, in a fixed order."""
    asked = set(scope.split())
    return " ".join(
        name for name in SCOPES if name in asked and (allowed is None or name in allowed)
    )


def service_scopes(client: OAuthClient) -> list[str]:
    """What a client's own token may be granted: its scopes about no person."""
    mine = SCOPES if client.scopes is None else client.scopes
    return [scope for scope in mine if scope in SERVICE_SCOPES]


def covers(allowed: str, scope: str) -> bool:
    """Whether scopes `allowed` include every one of `scope`."""
    return set(scope.split()) <= set(allowed.split())


def assured(client: OAuthClient, redirect_uri: str) -> bool:
    """Whether the answer can only reach `client`, so that an earlier yes may stand for
    the person's: a confidential client (the code is useless without its secret or key), or
    an https redirect URI. A public client's loopback port or private scheme can be taken by
    any program on the device, so the person is asked every time (RFC 8252 §8.6)."""
    return client.confidential or redirect_uri.startswith("https://")


@dataclass(frozen=True)
class LogoutRequest:
    """An application's request to sign the person out, checked (`OAuth.logout_request`)."""

    client: OAuthClient | None
    post_logout_redirect_uri: str | None  # one the client registered
    sub: str | None  # whom its ID token hint signed in, and in which session
    sid: str | None


@dataclass(frozen=True)
class Consent:
    """An application a person allowed, as their Applications page lists it."""

    client_id: str
    name: str
    scope: str
    granted_at: datetime


@dataclass(frozen=True)
class Authorization:
    """What an application asked for at the authorization endpoint."""

    client_id: str
    redirect_uri: str
    code_challenge: str  # S256
    scope: str = ""
    nonce: str | None = None
    max_age: int | None = None  # seconds the person's sign-in may be old (OIDC)
    # Of a pushed request (pushed.py): when it was pushed, and its `prompt`.
    pushed_at: datetime | None = None
    prompt: str = ""
    dpop_jkt: str | None = None  # the key the code is bound to (RFC 9449 §10)

    def too_old(self, signed_in_at: datetime, now: datetime) -> bool:
        """Whether a sign-in made at `signed_in_at` is older than the request allows: than
        its max_age, or, pushed with `prompt=login`, than the push. A sign-in made after
        a request was pushed meets both, however long the person then took to say yes
        (so `max_age=0` asks for one sign-in, not for one each time). Auth's clock alone
        is read."""
        if self.pushed_at is not None:
            if signed_in_at >= self.pushed_at:
                return False
            if self.prompt == "login":
                return True
        return self.max_age is not None and now - signed_in_at > timedelta(seconds=self.max_age)


@dataclass(frozen=True)
class Pushed:
    """An authorization request the application pushed (pushed.py), by its request_uri."""

    client_id: str
    request_uri: str


def _authorization(params: dict[str, str], pushed_at: datetime) -> Authorization:
    """The request a pushed one holds (checked when it was pushed)."""
    max_age = params.get("max_age")
    return Authorization(
        params["client_id"],
        params["redirect_uri"],
        params["code_challenge"],
        params.get("scope", ""),
        params.get("nonce"),
        int(max_age) if max_age is not None else None,
        pushed_at,
        params.get("prompt", ""),
        params.get("dpop_jkt"),
    )


@dataclass(frozen=True)
class Redeemed:
    pair: TokenPair
    scope: str
    id_token: str | None


@dataclass(frozen=True)
class Issued:
    """A client's own access token (no refresh token: it asks again)."""

    access_token: str
    expires_in: int
    scope: str


@dataclass
class OAuth:
    accounts: Accounts
    clients: dict[str, OAuthClient]
    # The keys of the clients that publish them at a jwks_uri (private_key_jwt).
    key_sets: ClientKeySets
    # The public keys of the clients that give them here (`jwks`).
    client_keys: dict[str, dict[str | None, ClientKey]] = field(init=False)

    def __post_init__(self) -> None:
        self.client_keys = {
            client_id: signing_keys(client.jwks)
            for client_id, client in self.clients.items()
            if client.jwks is not None
        }

    def name_of(self, client_id: str | None) -> str | None:
        """The application's name, for a session it holds (None: not one, or no longer
        configured)."""
        found = self.clients.get(client_id) if client_id else None
        return found.name if found else None

    def client(self, client_id: str, redirect_uri: str) -> OAuthClient:
        """The client, if `redirect_uri` is one it registered; else `UnknownClient`."""
        found = self.clients.get(client_id)
        if found is None or not any(registered(uri, redirect_uri) for uri in found.redirect_uris):
            raise UnknownClient
        return found

    async def push(self, client: OAuthClient, params: dict[str, str], seconds: int) -> str:
        """Keep a request the client pushed, checked by the caller: its request_uri."""
        return await pushed.push(self.accounts.sessions, client.client_id, params, seconds)

    async def pushed(self, client_id: str, request_uri: str) -> dict[str, str]:
        """What the page reads of a live request the client pushed (InvalidRequestUri if
        there is none)."""
        return await pushed.pushed(self.accounts.sessions, client_id, request_uri)

    async def authorize(
        self,
        caller: Caller,
        asked: Authorization | Pushed,
        ip: str | None = None,
        consented: bool = False,
    ) -> tuple[str, str]:
        """A code for `asked`, allowed by the caller: the code, and the scopes granted.
        A pushed request is spent with it (InvalidRequestUri where there is none live);
        a client that pushes its requests gets codes for those alone
        (`PushedRequestRequired`). `consented`: the person said yes just now, which is
        remembered; without it, an application that is not trusted needs an earlier yes
        that covers the scopes (`ConsentRequired`). `SignInTooOld` where the caller signed
        in longer ago than `asked` allows (`Authorization.too_old`)."""
        code = secrets.token_urlsafe(32)
        async with self.accounts.sessions.begin() as session:
            if isinstance(asked, Pushed):
                asked = _authorization(
                    *await pushed.take(session, asked.client_id, asked.request_uri)
                )
                client = self.client(asked.client_id, asked.redirect_uri)
            else:
                client = self.client(asked.client_id, asked.redirect_uri)
                if client.require_pushed_authorization_requests:
                    raise PushedRequestRequired
            scope = granted(asked.scope, client.scopes)
            signed_in = await session.get(UserSession, caller.session_id)
            if signed_in is None or signed_in.ended_at is not None:  # since the token's check
                raise NotAuthenticated
            now = utcnow()
            if asked.too_old(signed_in.created_at, now):
                raise SignInTooOld  # before consent: sign in again, then be asked
            if not client.trusted:
                remembered = assured(client, asked.redirect_uri)
                await self._consent(session, caller.user.id, client, scope, consented, remembered)
            session.add(
                OAuthCode(
                    code_hash=code_hash(code),
                    client_id=asked.client_id,
                    user_id=caller.user.id,
                    redirect_uri=asked.redirect_uri,
                    code_challenge=asked.code_challenge,
                    scope=scope,
                    nonce=asked.nonce,
                    dpop_jkt=asked.dpop_jkt,
                    amr=signed_in.amr,
                    auth_time=signed_in.created_at,
                    granted_by=caller.session_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=CODE_SECONDS),
                )
            )
            audit.record(
                session,
                "oauth_authorized",
                user_id=caller.user.id,
                email=caller.user.email,
                ip=ip,
                client=asked.client_id,
                scope=scope,
                consented=consented and not client.trusted,
            )
        return code, scope

    async def _consent(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        client: OAuthClient,
        scope: str,
        given: bool,
        remembered: bool,
    ) -> None:
        """Remember a yes just `given` to `scope` (with what was allowed before), or check
        that an earlier one covers it (where a yes may be `remembered` for this request).
        The row is locked: a revocation waits for this code, and then takes it too."""
        client_id = client.client_id
        before = await session.get(OAuthConsent, (user_id, client_id), with_for_update=True)
        if not given:
            if not remembered or before is None or not covers(before.scope, scope):
                raise ConsentRequired
            return
        allowed = f"{before.scope} {scope}" if before is not None else scope
        # An upsert: of two tabs saying yes at once, the later write stands (a scope only
        # the other named is asked for again next time), and neither fails.
        row = {"user_id": user_id, "client_id": client_id}
        when = {"scope": granted(allowed), "granted_at": utcnow()}
        await session.execute(upsert(session, _CONSENTS, row, when))

    def logout_request(
        self,
        hint: dict[str, Any] | None,
        client_id: str | None,
        post_logout_redirect_uri: str | None,
    ) -> LogoutRequest:
        """What an application's request to sign the person out names (OpenID Connect
        RP-Initiated Logout §2-3): the application, by the audience of its ID token
        (`hint`, verified as ours) or its client_id, which must agree; and an address to
        send the browser back to, only one that application registered. Else
        `LogoutRefused`."""
        client = None
        if hint is not None:
            audience = hint.get("aud")
            client = self.clients.get(audience) if isinstance(audience, str) else None
            if client is None:
                raise LogoutRefused
        if client_id is not None:
            named = self.clients.get(client_id)
            if named is None or (client is not None and named is not client):
                raise LogoutRefused
            client = named
        if post_logout_redirect_uri is not None and (
            client is None or post_logout_redirect_uri not in client.post_logout_redirect_uris
        ):  # exactly as registered (§3: no port of the loopback's own choosing)
            raise LogoutRefused
        sub, sid = (hint.get("sub"), hint.get("sid")) if hint else (None, None)
        return LogoutRequest(
            client,
            post_logout_redirect_uri,
            sub if isinstance(sub, str) else None,
            sid if isinstance(sid, str) else None,
        )

    async def consents(self, user_id: uuid.UUID) -> list[Consent]:
        """The applications the person allowed, most recent first (those still
        configured: another's consent means nothing, and comes back if it does)."""
        async with self.accounts.sessions() as session:
            rows = await session.scalars(
                select(OAuthConsent)
                .where(OAuthConsent.user_id == user_id)
                .order_by(OAuthConsent.granted_at.desc())
            )
            return [
                Consent(row.client_id, self.clients[row.client_id].name, row.scope, row.granted_at)
                for row in rows
                if row.client_id in self.clients
            ]

    async def revoke(self, caller: Caller, client_id: str, ip: str | None = None) -> None:
        """Take back the person's yes to an application and end its sessions: it is
        signed out at once, and its next request asks them again."""
        async with self.accounts.sessions.begin() as session:
            gone = await session.execute(
                delete(OAuthConsent).where(
                    OAuthConsent.user_id == caller.user.id, OAuthConsent.client_id == client_id
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise ConsentNotFound
            # Its codes not yet redeemed go too, before its sessions end: a redemption
            # under way holds its code's row, and the session it opens is then among those
            # that end here.
            await session.execute(
                delete(OAuthCode).where(
                    OAuthCode.user_id == caller.user.id,
                    OAuthCode.client_id == client_id,
                    OAuthCode.session_id.is_(None),
                )
            )
            await end_sessions(
                session, UserSession.user_id == caller.user.id, UserSession.client_id == client_id
            )
            audit.record(
                session,
                "oauth_consent_revoked",
                user_id=caller.user.id,
                email=caller.user.email,
                ip=ip,
                client=client_id,
            )
        self.accounts.tokens.wake_relay()

    async def client_token(
        self, client: OAuthClient, asked: str | None, ip: str, dpop_jkt: str | None = None
    ) -> Issued:
        """An access token of the client's own (RFC 6749 §4.4), for the service scopes
        asked (all it may be granted, where it asks for none) that it may be granted, and
        bound to the key `dpop_jkt` where given; `NoScope` where that leaves none. Audited."""
        allowed = service_scopes(client)
        scope = granted(asked or " ".join(allowed), allowed)
        if not scope:
            raise NoScope
        async with self.accounts.sessions.begin() as session:
            audit.record(session, "client_token", ip=ip, client=client.client_id, scope=scope)
        access_tokens = self.accounts.tokens.access_tokens
        token = access_tokens.issue_to_client(client.client_id, scope, dpop_jkt)
        return Issued(token, int(access_tokens.ttl.total_seconds()), scope)

    def authenticate(self, client_id: str, secret: str | None) -> OAuthClient:
        """The client at the token endpoint: a confidential one must give its secret
        (compared in constant time), a public one gives none, and one with keys proves
        itself with an assertion alone (`authenticate_assertion`)."""
        found = self.clients.get(client_id)
        if found is None:
            raise ClientRefused
        if not found.confidential:
            if secret:  # a public client has no secret to send
                raise ClientRefused
            return found
        if found.secret_sha256 is None:  # it signs assertions instead, and has no secret
            raise ClientRefused
        given = hashlib.sha256((secret or "").encode()).hexdigest()
        if not secret or not hmac.compare_digest(given, found.secret_sha256):
            raise ClientRefused
        return found

    async def authenticate_assertion(
        self, client_id: str, assertion: str, audiences: Collection[str]
    ) -> OAuthClient:
        """The client at the token endpoint, proved by an assertion it signed
        (private_key_jwt: client_assertions.py), which is spent: ClientRefused for a client
        without keys, and for any assertion that is not its own, for auth, now and new."""
        found = self.clients.get(client_id)
        if found is None or not found.signs:
            raise ClientRefused
        keys = self.client_keys.get(client_id)
        if found.jwks_uri is not None:
            keys = await self.key_sets.keys(client_id, found.jwks_uri, header_kid(assertion))
        if not keys:
            raise ClientRefused
        jti, expires = verified(keys, client_id, assertion, audiences)
        await spend(self.accounts.sessions, client_id, jti, expires)
        return found

    async def redeem(
        self, client: OAuthClient, code: str, redirect_uri: str, verifier: str, origin: Client
    ) -> Redeemed:
        """The tokens for a code, once (module docstring)."""
        async with self.accounts.sessions() as session:
            row = await session.get(OAuthCode, code_hash(code), with_for_update=True)
            if row is None or row.client_id != client.client_id:
                raise InvalidCodeGrant
            right = hmac.compare_digest(s256(verifier), row.code_challenge)
            keyed = dpop.held(row.dpop_jkt, origin.dpop_jkt)
            if row.session_id is not None and right and keyed:
                # Again, with the verifier (and the key of a code bound to one): so by
                # whoever holds it, the application or one that took the code and the
                # verifier from it. Either way, end what the first redemption opened.
                # (Without the verifier, or the key, a leaked code ends nothing.)
                await end_sessions(session, UserSession.id == row.session_id)
                audit.record(
                    session, "oauth_code_reused", user_id=row.user_id, client=client.client_id
                )
                await session.commit()
                self.accounts.tokens.wake_relay()
                raise InvalidCodeGrant
            fresh = row.expires_at > utcnow() and row.session_id is None
            if not fresh or row.redirect_uri != redirect_uri or not right:
                raise InvalidCodeGrant
            if not keyed:
                raise KeyBoundCode  # not spent: its client may still redeem it
            user = await session.scalar(
                select(User).where(User.id == row.user_id).with_for_update()
            )
            # The session that allowed it must still be live: signing out, or a password
            # change, within the code's minute voids it.
            allowed_by = await session.get(UserSession, row.granted_by)
            live = allowed_by is not None and allowed_by.ended_at is None
            if user is None or user.disabled or not user.email_verified or not live:
                raise InvalidCodeGrant
            amr = tuple((row.amr or "").split())
            opened_for = replace(origin, application=client.client_id)
            grant = self.accounts.tokens.issue(session, user, opened_for, amr, row.scope)
            row.session_id = grant.session_id
            audit.record(
                session,
                "login_ok",
                user_id=user.id,
                email=user.email,
                ip=origin.ip,
                method="oauth",
                client=client.client_id,
            )
            await session.commit()
        id_token = None
        if "openid" in row.scope.split():
            claims: dict[str, object] = {
                "aud": client.client_id,
                "sub": str(user.id),
                "auth_time": int(row.auth_time.timestamp()),
                "sid": str(grant.session_id),
            }
            if row.nonce is not None:
                claims["nonce"] = row.nonce
            if amr:
                claims["amr"] = list(amr)
            if "email" in row.scope.split():
                claims["email"] = user.email
                claims["email_verified"] = user.email_verified
            id_token = self.accounts.tokens.access_tokens.sign(claims)
        return Redeemed(grant.sign(), row.scope, id_token)
