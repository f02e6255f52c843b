"""Refresh tokens: opaque, stored hashed, rotated on every use; a reused one revokes its family.

A family is one login's chain of rotations: a session (`user_sessions.py`). Presenting a
token that was already rotated means two parties hold it (the legitimate client and a
thief), so the whole family dies. A disabled account's tokens are refused.

With `AUTH_REFRESH_REUSE_GRACE_SECONDS` set (off by default), a client that never got
the answer to its refresh (a dropped response, a 503 after the commit) may present the
same token again within that many seconds of its rotation, as long as the token it was
rotated into is still unused: it gets the family's next pair, and the unused successor
counts as rotated (and can itself be no replay), so a copy of it presented later, even
within the period, is a reuse.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from auth_service import audit
from auth_service.config import AuthSettings, OAuthClient
from auth_service.errors import InvalidGrant, KeyBoundGrant
from auth_service.models import Base, RefreshToken, User, UserSession
from auth_service.tokens import AccessTokenIssuer, TokenPair, hash_refresh_token, new_refresh_token
from auth_service.user_sessions import Client, end_sessions, open_session, session_row
from common import dpop
from common.clock import utcnow
from common.db import engine_of

# The statements of `rotate`, built once.
_TOKENS = Base.metadata.tables[RefreshToken.__tablename__]
_USERS = Base.metadata.tables[User.__tablename__]
_SESSIONS = Base.metadata.tables[UserSession.__tablename__]
# The account's roles if it may still refresh (verified, not disabled): a subquery in
# RETURNING, so one statement both rotates the token and reads what the new one needs.
# SQLite renders RETURNING's columns unqualified (`WHERE id = user_id`), correct because
# only refresh_tokens has a `user_id`: a condition on a name both tables have would bind
# to users. tests/integration/test_token_lifecycle.py checks the roles are the account's.
_ROLES = (
    select(_USERS.c.roles)
    .where(
        _USERS.c.id == _TOKENS.c.user_id,
        _USERS.c.email_verified.is_(True),
        _USERS.c.disabled_at.is_(None),
    )
    .scalar_subquery()
)


def _rotating(*which: ColumnElement[bool], **also: Any) -> Any:
    """UPDATE … RETURNING that rotates the live, unexpired token matching `which`."""
    return (
        update(_TOKENS)
        .where(*which, _TOKENS.c.revoked_at.is_(None), _TOKENS.c.expires_at > bindparam("now"))
        .values(revoked_at=bindparam("now"), **also)
        .returning(_TOKENS.c.user_id, _TOKENS.c.family_id, _ROLES.label("roles"))
    )


_ROTATE = _rotating(_TOKENS.c.token_hash == bindparam("hash"))
# Only a live session: a token that outlived its session's end (issued while it ended)
# refreshes nothing.
_TOUCH = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("sid"), _SESSIONS.c.ended_at.is_(None))
    .values(last_used_at=bindparam("now"), ip=bindparam("ip"), user_agent=bindparam("ua"))
    .returning(_SESSIONS.c.amr, _SESSIONS.c.client_id, _SESSIONS.c.scope, _SESSIONS.c.dpop_jkt)
)
# A public client's session, bound at its first refresh with a DPoP proof (RFC 9449 §5:
# such a client's refresh tokens are bound once it shows a key).
_BIND = (
    update(_SESSIONS)
    .where(_SESSIONS.c.id == bindparam("sid"), _SESSIONS.c.dpop_jkt.is_(None))
    .values(dpop_jkt=bindparam("jkt"))
)
# The grace path: the unused successor of a token rotated at `after` (a rotation creates
# the successor at the instant it revokes the token), rotated in its turn and marked so:
# its holder never had it, so it can be no replay.
_ROTATE_SUCCESSOR = _rotating(
    _TOKENS.c.family_id == bindparam("family"),
    _TOKENS.c.created_at == bindparam("after"),
    replayed_over=True,
)
_INSERT = insert(_TOKENS)
_OPEN = insert(_SESSIONS)


def signed_in_as(stored: str | None) -> tuple[str, ...]:
    """A session's `amr`, as its column holds it."""
    return tuple(stored.split()) if stored else ()


@dataclass(frozen=True)
class Grant:
    """A login's or a rotation's tokens, before the access token is signed. The refresh
    token's row is in the caller's transaction; `sign()` comes after its commit, so no
    database connection waits on an RSA signature (~0.8 ms)."""

    access_tokens: AccessTokenIssuer
    user_id: uuid.UUID
    roles: list[str]  # the account's; an application's token carries none (`sign`)
    session_id: uuid.UUID
    refresh_token: str
    amr: tuple[str, ...]  # how the session was signed in
    application: str | None = None  # the OAuth client an application's session is for
    scope: str | None = None  # and what was granted to it
    dpop_jkt: str | None = None  # the key its access token is bound to (RFC 9449)

    def sign(self) -> TokenPair:
        # Signing with a key already in memory does not fail in practice; if it ever did,
        # the client would hold a revoked token and log in again (a retry reads as reuse).
        # An application's session carries no roles, so no service's admin check passes
        # for an application.
        roles = [] if self.application else self.roles
        access_token = self.access_tokens.issue(
            self.user_id,
            roles,
            self.session_id,
            self.amr,
            self.application,
            self.scope,
            self.dpop_jkt,
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=self.refresh_token,
            expires_in=int(self.access_tokens.ttl.total_seconds()),
            token_type=dpop.token_type(self.dpop_jkt),
        )


@dataclass(frozen=True)
class LiveRefreshToken:
    """A refresh token that would refresh now, as introspection tells of it (RFC 7662)."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    client_id: str | None  # the application whose session it is; None: the person's own
    scope: str | None
    issued_at: datetime
    expires_at: datetime


def _nothing() -> None:
    return None


@dataclass
class RefreshTokens:
    settings: AuthSettings
    sessions: async_sessionmaker[AsyncSession]
    access_tokens: AccessTokenIssuer
    # The outbox relay's notify: ending sessions writes an event (`end_sessions`), to be
    # published now, not at the next poll.
    wake_relay: Callable[[], None] = _nothing

    def _refreshes(self, holder: str | None, caller: str | None) -> bool:
        """Whether a client that proved itself as `caller` (None: none did) may refresh a
        session opened for `holder` (None: a person's own). A confidential client's tokens
        are refreshed by that client alone (RFC 6749 §6); a client that names itself gets
        only its own; a public client's, like a person's, by whoever holds them."""
        if caller is not None:
            return caller == holder
        return not self._confidential(holder)

    def _registered(self, holder: str | None) -> OAuthClient | None:
        """The client a session was opened for (None: a person's own, or a client no
        longer registered)."""
        return next((c for c in self.settings.oauth_clients if c.client_id == holder), None)

    def _binds_always(self, holder: str | None) -> bool:
        """Whether a session opened for `holder` is a client's whose tokens are all bound
        to a key (`dpop_bound_access_tokens`, RFC 9449 §5.2): even one begun unbound (the
        client registered so since) refreshes only with a proof, at either endpoint."""
        client = self._registered(holder)
        return client is not None and client.dpop_bound_access_tokens

    def _confidential(self, holder: str | None) -> bool:
        """Whether a session opened for `holder` (None: a person's own) is a confidential
        client's."""
        client = self._registered(holder)
        return client is not None and client.confidential

    def issue(
        self,
        session: AsyncSession,
        user: User,
        client: Client,
        amr: tuple[str, ...],
        scope: str | None = None,
    ) -> Grant:
        """A new grant in a new session, signed in as `amr` says (`scope`: what an
        application's session was granted); the rows join the caller's transaction, and
        the caller signs the grant once that commits."""
        session_id = open_session(session, user.id, client, amr, scope)
        return self._next(
            session, user, session_id, amr, client.application, scope, client.dpop_jkt
        )

    def _next(
        self,
        session: AsyncSession,
        user: User,
        session_id: uuid.UUID,
        amr: tuple[str, ...],
        application: str | None,
        scope: str | None,
        dpop_jkt: str | None,
    ) -> Grant:
        refresh = new_refresh_token()
        session.add(RefreshToken(**self._token_row(user.id, session_id, refresh, utcnow())))
        return Grant(
            self.access_tokens,
            user.id,
            list(user.roles),
            session_id,
            refresh,
            amr,
            application,
            scope,
            dpop_jkt,
        )

    async def open(
        self,
        conn: AsyncConnection,
        user_id: uuid.UUID,
        roles: list[str],
        client: Client,
        amr: tuple[str, ...],
    ) -> Grant:
        """`issue` on a plain connection (the login's Core path): a new session and its
        first refresh token, in the caller's transaction."""
        now = utcnow()
        row = session_row(user_id, client, now, amr)
        refresh = new_refresh_token()
        await conn.execute(_OPEN, row)
        await conn.execute(_INSERT, self._token_row(user_id, row["id"], refresh, now))
        return Grant(
            self.access_tokens,
            user_id,
            list(roles),
            row["id"],
            refresh,
            amr,
            dpop_jkt=client.dpop_jkt,
        )

    def _token_row(
        self, user_id: uuid.UUID, family_id: uuid.UUID, refresh: str, now: datetime
    ) -> dict[str, Any]:
        """A refresh token's row (its hash, never the token), for the ORM or Core alike."""
        return {
            "user_id": user_id,
            "family_id": family_id,
            "token_hash": hash_refresh_token(refresh),
            "created_at": now,
            "expires_at": now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        }

    async def reissue(self, session: AsyncSession, user: User, session_id: uuid.UUID) -> Grant:
        """A grant replacing the session's current pair: after a change the tokens should
        reflect, e.g. a new email address. The replaced token is marked superseded, not
        rotated: another request of the same client may still present it (a second tab
        refreshing meanwhile), which is no sign of a copy, so it is refused without ending
        the session. A session bound to a key (RFC 9449) keeps it, and so does its new
        access token: the caller showed a proof by it to get here."""
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), superseded=True)
            .execution_options(synchronize_session=False)
        )
        amr, application, scope, jkt = (
            await session.execute(
                select(
                    UserSession.amr, UserSession.client_id, UserSession.scope, UserSession.dpop_jkt
                ).where(UserSession.id == session_id)
            )
        ).one()
        return self._next(session, user, session_id, signed_in_as(amr), application, scope, jkt)

    async def rotate(self, presented: str, client: Client) -> TokenPair:
        """The next pair of the token's family. Raises InvalidGrant for unknown, expired or
        revoked tokens; a rotated one presented again also revokes the whole family (but
        see the grace period above).

        The hot path of a busy auth, so it runs three prepared Core statements on a plain
        connection (no ORM session, no statement built per call) and signs after the
        commit."""
        now = utcnow()
        token_hash = hash_refresh_token(presented)
        async with self.engine.begin() as conn:
            # One statement finds and rotates a live token: of two concurrent uses, one wins.
            live = (await conn.execute(_ROTATE, {"hash": token_hash, "now": now})).one_or_none()
            if live is not None:
                grant = await self._advance(conn, live, now, client)
        if live is None:
            async with self.sessions() as session:
                grant = await self._rotated_again(session, token_hash, now, client)
        return grant.sign()

    async def _advance(
        self, conn: AsyncConnection, spent: Any, now: datetime, client: Client
    ) -> Grant:
        """The family's next token, once `spent` (user_id, family_id, roles) was rotated
        in this transaction; InvalidGrant, which rolls it back, where the account may no
        longer refresh or the session ended, and KeyBoundGrant where the session is bound
        to a key (RFC 9449) and the request's DPoP proof is not by that key. A public
        client's session not yet bound is bound by its first proof."""
        if spent.roles is None:  # gone, unverified or disabled
            raise InvalidGrant
        touch = {"sid": spent.family_id, "now": now, "ip": client.ip, "ua": client.user_agent}
        touched = (await conn.execute(_TOUCH, touch)).one_or_none()
        if touched is None or not self._refreshes(touched.client_id, client.application):
            raise InvalidGrant  # the session ended, or is another client's
        bound, shown = touched.dpop_jkt, client.dpop_jkt
        if not dpop.held(bound, shown) or (shown is None and self._binds_always(touched.client_id)):
            raise KeyBoundGrant
        if bound is None and shown is not None and not self._confidential(touched.client_id):
            await conn.execute(_BIND, {"sid": spent.family_id, "jkt": shown})
        refresh = new_refresh_token()
        await conn.execute(_INSERT, self._token_row(spent.user_id, spent.family_id, refresh, now))
        amr = signed_in_as(touched.amr)
        return Grant(
            self.access_tokens,
            spent.user_id,
            spent.roles,
            spent.family_id,
            refresh,
            amr,
            touched.client_id,
            touched.scope,
            client.dpop_jkt,
        )

    @property
    def engine(self) -> AsyncEngine:
        return engine_of(self.sessions)

    async def _rotated_again(
        self, session: AsyncSession, token_hash: str, now: datetime, client: Client
    ) -> Grant:
        """A token that is not live: unknown, expired, superseded, of an ended session, or
        rotated. A rotated one is a reuse, which ends its family, unless it is a replay
        within the grace period whose successor is still unused."""
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        if (
            row is None
            or row.revoked_at is None  # expired
            or row.superseded
            or row.expires_at <= now
        ):
            raise InvalidGrant
        ended = await session.scalar(
            select(UserSession.ended_at).where(UserSession.id == row.family_id)
        )
        if ended is not None:  # logged out, or ended by the user or an admin: no theft
            raise InvalidGrant
        grace = self.settings.refresh_reuse_grace_seconds
        if grace and not row.replayed_over and now - row.revoked_at <= timedelta(seconds=grace):
            grant = await self._replay(session, row, now, client)
            if grant is not None:
                return grant
        # Rotated already: someone else holds a copy. End the family.
        await end_sessions(session, UserSession.id == row.family_id)
        audit.record(session, "refresh_reuse", user_id=row.user_id, ip=client.ip)
        await session.commit()
        self.wake_relay()
        raise InvalidGrant

    async def _replay(
        self, session: AsyncSession, row: RefreshToken, now: datetime, client: Client
    ) -> Grant | None:
        """The grace period's answer to `row` presented again: its successor rotated and
        the family's next token, committed, if the successor is still unused; None if not,
        and None where the session is bound to another key than the request's proof (who
        bound it with the successor unused took the token from its holder: a reuse). On
        the session's own connection: SQLite's pool has only the one."""
        assert row.revoked_at is not None
        conn = await session.connection()
        after = {"family": row.family_id, "after": row.revoked_at, "now": now}
        successor = (await conn.execute(_ROTATE_SUCCESSOR, after)).one_or_none()
        if successor is None:
            return None
        try:
            grant = await self._advance(conn, successor, now, client)
        except KeyBoundGrant:
            return None
        await conn.execute(
            audit.INSERT, audit.entry("refresh_replayed", user_id=row.user_id, ip=client.ip)
        )
        await session.commit()
        return grant

    async def revoke(
        self,
        caller: str | None,
        ip: str | None,
        *,
        refresh_token: str | None = None,
        signed_in: tuple[uuid.UUID, uuid.UUID] | None = None,
    ) -> bool:
        """A logout, and RFC 7009's revocation: end the live session of a refresh token,
        or of an access token's (`signed_in`: its session and account), if the client that
        proved itself as `caller` (None: none did) could refresh it. False where it could
        not (the token is another client's, or a confidential client's and it did not
        prove itself); True otherwise, also where there was nothing to end."""
        if refresh_token is not None:
            family = select(RefreshToken.family_id).where(
                RefreshToken.token_hash == hash_refresh_token(refresh_token)
            )
            which = [UserSession.id == family.scalar_subquery()]
        else:
            assert signed_in is not None  # one of the two, always
            which = [UserSession.id == signed_in[0], UserSession.user_id == signed_in[1]]
        found = select(UserSession.id, UserSession.user_id, UserSession.client_id).where(
            UserSession.ended_at.is_(None), *which
        )
        async with self.sessions.begin() as session:
            row = (await session.execute(found)).one_or_none()
            if row is None:
                return True
            if not self._refreshes(row.client_id, caller):
                return False
            await end_sessions(session, UserSession.id == row.id)
            audit.record(session, "logout", user_id=row.user_id, ip=ip, client=row.client_id)
        self.wake_relay()
        return True

    async def live(self, presented: str) -> LiveRefreshToken | None:
        """The token, if `rotate` would take it now: not rotated, revoked or expired, its
        session live and its account verified and enabled. None otherwise (a rotated
        token within the grace period too: it is no longer its holder's current one)."""
        found = (
            select(
                RefreshToken.user_id,
                RefreshToken.family_id,
                UserSession.client_id,
                UserSession.scope,
                RefreshToken.created_at,
                RefreshToken.expires_at,
            )
            .join(UserSession, UserSession.id == RefreshToken.family_id)
            .join(User, User.id == RefreshToken.user_id)
            .where(
                RefreshToken.token_hash == hash_refresh_token(presented),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > utcnow(),
                UserSession.ended_at.is_(None),
                User.email_verified.is_(True),
                User.disabled_at.is_(None),
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(found)).one_or_none()
        return None if row is None else LiveRefreshToken(*row)

    @staticmethod
    async def revoke_all(session: AsyncSession, user_id: uuid.UUID) -> None:
        """End every session of the account."""
        await end_sessions(session, UserSession.user_id == user_id)
