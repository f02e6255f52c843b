"""The server-side session store: what a browser's cookie stands for.

Invariants: the cookie is a random 256-bit id and the database keeps only its SHA-256, so
a copy of the table cannot be replayed as a cookie; tokens and the CSRF secret are sealed
(`session_keys.py`); a session lives at most `session_max_seconds` and ends after
`session_idle_seconds` without a request; signing in always starts a new session id (no
fixation); and a refresh token is spent by one request at a time across every web
instance (`claim_refresh` leases it, `store_tokens` writes over the version it began from).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.clock import utcnow
from web_service.config import WebSettings
from web_service.models import WebSession
from web_service.session_keys import InvalidToken

# Touch `last_seen_at` at most this often: one write a minute per active browser, not one
# a request.
TOUCH_EVERY = timedelta(seconds=60)


def new_id() -> str:
    return secrets.token_urlsafe(32)


def id_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    access_expires_at: float  # epoch seconds


@dataclass
class Session:
    """One browser's session as a request sees it. `cookie` is set when the browser must be
    sent a (new) cookie; `stored` is false until the first save."""

    key: str
    data: dict[str, Any]
    created_at: datetime
    last_seen_at: datetime
    tokens: Tokens | None = None
    version: int = 0
    user_id: str | None = None
    cookie: str | None = None
    stored: bool = False
    dirty: bool = False
    # A cookie came with the request but named no live session (expired or ended).
    lapsed: bool = False
    ended: bool = False
    # The refresh lease this request holds: the `refreshing_until` it wrote. Releasing it
    # clears that value only, never a lease another request took after this one expired.
    lease: datetime | None = None

    @property
    def signed_in(self) -> bool:
        return self.tokens is not None

    def csrf_token(self) -> str:
        """The session's synchronizer token; a session that hands one out is kept."""
        if "csrf" not in self.data:
            self.data["csrf"] = secrets.token_urlsafe(32)
            self.dirty = True
        if not self.stored:
            self.dirty = True
        return str(self.data["csrf"])

    def set(self, name: str, value: Any) -> None:
        if self.data.get(name) != value:
            self.data[name] = value
            self.dirty = True

    def pop(self, name: str, default: Any = None) -> Any:
        if name in self.data:
            self.dirty = True
            return self.data.pop(name)
        return default


class SessionStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], sealer: MultiFernet, settings: WebSettings
    ) -> None:
        self._db = sessions
        self._sealer = sealer
        self._idle = timedelta(seconds=settings.session_idle_seconds)
        self._max = timedelta(seconds=settings.session_max_seconds)

    def _seal(self, value: Any) -> str:
        return self._sealer.encrypt(json.dumps(value).encode()).decode()

    def _open(self, sealed: str) -> Any:
        return json.loads(self._sealer.decrypt(sealed.encode()))

    def _tokens(self, row: WebSession) -> Tokens | None:
        return Tokens(**self._open(row.tokens)) if row.tokens else None

    def _expires(self, created: datetime, now: datetime) -> datetime:
        return min(created + self._max, now + self._idle)

    def anonymous(self, lapsed: bool = False) -> Session:
        now = utcnow()
        raw = new_id()
        return Session(
            id_hash(raw), {}, created_at=now, last_seen_at=now, cookie=raw, lapsed=lapsed
        )

    async def load(self, cookie: str | None) -> Session:
        """The cookie's live session, or a new anonymous one (not stored until saved)."""
        if not cookie or len(cookie) > 128:
            return self.anonymous()
        now = utcnow()
        async with self._db() as db:
            row = await db.get(WebSession, id_hash(cookie))
        if row is None or row.expires_at <= now:
            return self.anonymous(lapsed=True)
        try:
            data, tokens = self._open(row.data), self._tokens(row)
        except InvalidToken:  # sealed with a key since removed: treat as ended
            return self.anonymous(lapsed=True)
        return Session(
            row.id_hash,
            data,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            tokens=tokens,
            version=row.version,
            user_id=row.user_id,
            stored=True,
        )

    async def save(self, session: Session) -> None:
        """Store what changed: a new session, its data, or (once a minute) that it was seen."""
        if session.ended:
            return
        now = utcnow()
        if not session.stored:
            if not session.dirty:
                return
            async with self._db.begin() as db:
                db.add(self._row(session, now))
            session.stored, session.dirty = True, False
            return
        values: dict[str, Any] = {}
        if session.dirty:
            values["data"] = self._seal(session.data)
        if values or now - session.last_seen_at >= TOUCH_EVERY:
            values.update(last_seen_at=now, expires_at=self._expires(session.created_at, now))
            async with self._db.begin() as db:
                await db.execute(
                    update(WebSession).where(WebSession.id_hash == session.key).values(**values)
                )
            session.last_seen_at, session.dirty = now, False

    def _row(self, session: Session, now: datetime) -> WebSession:
        return WebSession(
            id_hash=session.key,
            user_id=session.user_id,
            version=session.version,
            tokens=self._seal(session.tokens.__dict__) if session.tokens else None,
            data=self._seal(session.data),
            created_at=session.created_at,
            last_seen_at=now,
            expires_at=self._expires(session.created_at, now),
        )

    async def sign_in(
        self, old: Session, tokens: Tokens, user_id: str, keep: dict[str, Any]
    ) -> Session:
        """A new session (new id, new CSRF secret) holding the tokens; the old one ends.
        `keep` carries over what the next page needs (notices)."""
        fresh = self.anonymous()
        fresh.tokens, fresh.user_id, fresh.data = tokens, user_id, dict(keep)
        fresh.csrf_token()
        now = utcnow()
        async with self._db.begin() as db:
            db.add(self._row(fresh, now))
            if old.stored:
                await db.execute(delete(WebSession).where(WebSession.id_hash == old.key))
        old.ended = True
        fresh.stored, fresh.dirty = True, False
        return fresh

    async def end(self, session: Session) -> None:
        if session.stored:
            async with self._db.begin() as db:
                await db.execute(delete(WebSession).where(WebSession.id_hash == session.key))
        session.ended = True

    async def claim_refresh(self, session: Session, lease: float) -> bool:
        """True if this request may spend the refresh token: no one else holds the lease
        and the tokens are still the version this request read."""
        now = utcnow()
        return await self._set_lease(
            session,
            now + timedelta(seconds=lease),
            WebSession.version == session.version,
            or_(WebSession.refreshing_until.is_(None), WebSession.refreshing_until < now),
        )

    async def renew_refresh(self, session: Session, lease: float) -> bool:
        """This request's lease extended to `lease` seconds from now; False if it is no
        longer this request's (it ran out and another took it, or the session ended)."""
        if session.lease is None:
            return False
        until = utcnow() + timedelta(seconds=lease)
        return await self._set_lease(session, until, WebSession.refreshing_until == session.lease)

    async def release_refresh(self, session: Session) -> None:
        if session.lease is not None:
            await self._set_lease(session, None, WebSession.refreshing_until == session.lease)
        session.lease = None

    async def _set_lease(self, session: Session, until: datetime | None, *where: Any) -> bool:
        """`refreshing_until` set to `until` if the session's row meets `where`; then the
        request's lease is `until`."""
        async with self._db.begin() as db:
            result = await db.execute(
                update(WebSession)
                .where(WebSession.id_hash == session.key, *where)
                .values(refreshing_until=until)
                .execution_options(synchronize_session=False)
            )
        if not result.rowcount:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
            return False
        session.lease = until
        return True

    def _ours(self, session: Session) -> Any:
        """`refreshing_until` after a write that ends this request's lease: cleared if the
        lease is still this request's, else left to whoever holds it now."""
        return case(
            (WebSession.refreshing_until == session.lease, None), else_=WebSession.refreshing_until
        )

    async def store_tokens(self, session: Session, tokens: Tokens) -> None:
        """The next pair, over the version this request claimed; releases the lease."""
        async with self._db.begin() as db:
            await db.execute(
                update(WebSession)
                .where(WebSession.id_hash == session.key, WebSession.version == session.version)
                .values(
                    tokens=self._seal(tokens.__dict__),
                    version=session.version + 1,
                    refreshing_until=self._ours(session),
                )
                .execution_options(synchronize_session=False)
            )
        session.tokens, session.version, session.lease = tokens, session.version + 1, None

    async def take_tokens(self, session: Session, tokens: Tokens) -> bool:
        """A pair auth issued in place of the session's (an address change), stored over
        whatever version is there now: it is the login's only live pair. Releases the
        lease. False when the session is gone."""
        async with self._db.begin() as db:
            result = await db.execute(
                update(WebSession)
                .where(WebSession.id_hash == session.key)
                .values(
                    tokens=self._seal(tokens.__dict__),
                    version=WebSession.version + 1,
                    refreshing_until=self._ours(session),
                )
                .execution_options(synchronize_session=False)
            )
        session.lease = None
        if not result.rowcount:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
            return False
        return await self.reload_tokens(session)

    async def reload_tokens(self, session: Session) -> bool:
        """Take the stored tokens if another request refreshed them. False when the session
        is gone."""
        async with self._db() as db:
            row = await db.scalar(select(WebSession).where(WebSession.id_hash == session.key))
        if row is None:
            return False
        session.tokens, session.version = self._tokens(row), row.version
        return True

    async def purge(self) -> int:
        """Delete expired sessions; returns how many."""
        async with self._db.begin() as db:
            result = await db.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
        return int(result.rowcount)  # type: ignore[attr-defined]
