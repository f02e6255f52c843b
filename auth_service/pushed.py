"""Pushed authorization requests (RFC 9126). A client sends its authorization request to
auth first, server to server (`POST /v1/auth/par`, proving itself as at the token
endpoint), and then the browser to the authorization endpoint with its client_id and the
`request_uri` it got back, and nothing else. So the request is known to be the client's
before the person sees a page, and its parameters (the redirect URI, the PKCE challenge,
the scopes, the nonce, the state) never travel in the browser's address, where they can
be read, logged or changed.

- `push` keeps a request that passes the authorization endpoint's checks, for
  AUTH_PUSHED_REQUEST_SECONDS: the person may sign in on the way, and the web front end
  carries the request_uri alone through that.
- `pushed` reads back what the web front end's pages need of it.
- `take` spends it for the one code it gives (`OAuth.authorize`), in that code's
  transaction: a request_uri gives one code.

A request_uri is random (256 bits); auth keeps its SHA-256, as it keeps codes.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.errors import InvalidRequestUri
from auth_service.models import PushedRequest
from common.authorization import PARAMS, REQUEST_URI_PREFIX
from common.clock import utcnow

# What a pushed request keeps: the parameters of an authorization request but its
# client_id, which its row names.
KEPT = tuple(name for name in PARAMS if name != "client_id")
# What the web front end's page reads of one. Not its nonce or PKCE challenge, which the
# code alone needs: whoever holds a request_uri may ask, and it is in the browser's
# address.
SHOWN = ("redirect_uri", "scope", "state", "prompt", "max_age", "login_hint")


def _uri_hash(request_uri: str) -> str:
    return hashlib.sha256(request_uri.encode()).hexdigest()


async def push(
    sessions: async_sessionmaker[AsyncSession],
    client_id: str,
    params: dict[str, str],
    seconds: int,
) -> str:
    """Keep a request (checked) of the client's for `seconds`: its request_uri."""
    request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
    kept = {name: value for name, value in params.items() if name in KEPT}
    now = utcnow()
    async with sessions.begin() as session:
        session.add(
            PushedRequest(
                uri_hash=_uri_hash(request_uri),
                client_id=client_id,
                params=kept,
                pushed_at=now,
                expires_at=now + timedelta(seconds=seconds),
            )
        )
    return request_uri


async def pushed(
    sessions: async_sessionmaker[AsyncSession], client_id: str, request_uri: str
) -> dict[str, str]:
    """What the page reads of a live request the client pushed (`SHOWN`, and its
    client_id); or InvalidRequestUri: unknown, expired, spent, or another client's."""
    async with sessions() as session:
        row = _live(await session.get(PushedRequest, _uri_hash(request_uri)), client_id)
    shown = {name: value for name, value in row.params.items() if name in SHOWN}
    return {**shown, "client_id": client_id}


async def take(
    session: AsyncSession, client_id: str, request_uri: str
) -> tuple[dict[str, str], datetime]:
    """The whole of a live request the client pushed (as `pushed`), and when; spent with
    `session`'s transaction (locked until then: of two takes at once, the second finds
    nothing)."""
    found = await session.get(PushedRequest, _uri_hash(request_uri), with_for_update=True)
    row = _live(found, client_id)
    await session.delete(row)
    return {**row.params, "client_id": client_id}, row.pushed_at


def _live(row: PushedRequest | None, client_id: str) -> PushedRequest:
    if row is None or row.client_id != client_id or row.expires_at <= utcnow():
        raise InvalidRequestUri
    return row
