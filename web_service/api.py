"""The APIs as the web front end calls them: auth, films and the mailer, over HTTP.

`Backend` makes one call on behalf of a browser: it forwards the browser's address
(`X-Forwarded-For`, believed by auth only from trusted proxies) and User-Agent, and the
request id, and turns every failure into an `ApiProblem` (the API's `error` code, the
422 details, `Retry-After`). `UserApi` adds a signed-in session's access token and
refreshes it transparently: before it expires, and once after a 401. A refresh token is
spent by one request at a time (the store's lease); a refused refresh ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from common.logs import request_id
from web_service.config import WebSettings
from web_service.sessions import Session, SessionStore, Tokens

log = logging.getLogger(__name__)

# Refresh when the access token has less than this left, so it cannot expire in flight.
EXPIRY_MARGIN = 30.0
# How long the right to spend the refresh token lasts unless renewed: its holder renews
# it while its call is in flight, so only a holder that went away lets it run out, or one
# whose call has been in flight for longer than anyone waits for an answer.
REFRESH_LEASE = 15.0
LONGEST_RENEWAL = 60.0


@dataclass(frozen=True)
class Browser:
    """Who the call is made for, as the web front end's edge saw them."""

    ip: str | None = None
    user_agent: str | None = None


class ApiProblem(Exception):
    """An API said no (4xx/5xx), or could not be reached (status 503, error `unavailable`).
    `body` is the whole JSON answer, for a refusal that carries more than its error (auth's
    `mfa_required` carries the token for the second step)."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str = "",
        details: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.details = details or []
        self.retry_after = retry_after
        self.body = body or {}


class SessionEnded(Exception):
    """The session's tokens were refused: it ended (logout elsewhere, password change,
    account disabled or deleted). The browser must sign in again."""


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return max(1, int(value)) if value.isdigit() else None


# 5xx answers that mean something the visitor can act on: auth's authenticator app that
# cannot be checked (a recovery code still works; an admin can turn it off).
NAMED_OUTAGES = {"mfa_unavailable"}


def problem_from(response: httpx.Response) -> ApiProblem:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    error = str(body.get("error") or ("unavailable" if status >= 500 else "error"))
    details = body.get("details")
    # A 5xx is "unavailable", but for those an API names as a state to act on.
    said = status >= 500 and error in NAMED_OUTAGES
    return ApiProblem(
        503 if status >= 500 else status,
        error if said else "unavailable" if status >= 500 else error,
        str(body.get("message", "")),
        details if isinstance(details, list) else None,
        _retry_after(response),
        body if status < 500 else None,
    )


def tokens_from(pair: dict[str, Any]) -> Tokens:
    return Tokens(
        access_token=pair["access_token"],
        refresh_token=pair["refresh_token"],
        access_expires_at=time.time() + float(pair["expires_in"]),
    )


def claims_of(access_token: str) -> dict[str, Any]:
    """The token's claims, unverified: the token came straight from auth over our own
    connection, and is only read to show or hide links; the APIs verify it on every call."""
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


class Backend:
    def __init__(self, settings: WebSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.urls = {
            "auth": settings.auth_url.rstrip("/"),
            "films": settings.films_url.rstrip("/"),
            "mailer": settings.mailer_url.rstrip("/"),
        }
        if transport is None and settings.source_address:
            transport = httpx.AsyncHTTPTransport(local_address=settings.source_address)
        self._http = httpx.AsyncClient(
            timeout=settings.api_timeout_seconds, transport=transport, follow_redirects=False
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def call_health(self, service: str) -> None:
        """Raises unless the service answers its /healthz."""
        response = await self._http.get(self.urls[service] + "/healthz")
        response.raise_for_status()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        browser: Browser,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The answer's JSON (None for 204), or ApiProblem."""
        headers = {"Accept": "application/json", "User-Agent": browser.user_agent or "web_service"}
        if browser.ip:
            headers["X-Forwarded-For"] = browser.ip
        if rid := request_id.get():
            headers["X-Request-ID"] = rid
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._http.request(
                method, self.urls[service] + path, headers=headers, json=json, params=params
            )
        except httpx.HTTPError as exc:
            log.warning("%s %s %s failed: %r", service, method, path, exc)
            raise ApiProblem(503, "unavailable", f"{service} did not answer") from exc
        if response.status_code >= 400:
            problem = problem_from(response)
            if problem.status == 503:
                log.warning("%s %s %s answered %d", service, method, path, response.status_code)
            raise problem
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


@dataclass
class UserApi:
    """Calls for one signed-in session, with its access token kept fresh."""

    backend: Backend
    store: SessionStore
    session: Session
    browser: Browser
    refreshed: bool = field(default=False, init=False)

    async def call(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        async def send() -> Any:
            token = await self._access_token()
            return await self.backend.call(
                service, method, path, self.browser, token=token, **kwargs
            )

        return await self._retrying(send)

    async def call_replacing_tokens(
        self, service: str, method: str, path: str, **kwargs: Any
    ) -> Any:
        """A call whose answer is the session's next pair (an address change confirmed).
        It holds the refresh lease from before the call until the pair is stored: another
        request of the session would otherwise spend the old refresh token meanwhile,
        which auth refuses from the change on, and end the web session."""

        async def send() -> Any:
            await self._access_token()
            while not await self._claim():
                pass  # another request refreshed first: its pair, then the lease
            # Once auth has answered, its pair is stored even if this request is cancelled.
            return await asyncio.shield(self._exchange(service, method, path, **kwargs))

        return await self._retrying(send)

    async def _exchange(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        """Under the lease: the call, then its answer stored as the session's pair."""
        stored = False
        try:
            async with self._lease_kept():
                pair = await self.backend.call(
                    service, method, path, self.browser, token=self._tokens().access_token, **kwargs
                )
            stored = await self.store.take_tokens(self.session, tokens_from(pair))
            if not stored:  # the web session ended meanwhile: no one will hold the pair
                await self._abandon(pair)
        finally:
            if not stored:
                await self.store.release_refresh(self.session)
        if not stored:
            raise SessionEnded
        return pair

    @contextlib.asynccontextmanager
    async def _lease_kept(self) -> AsyncIterator[None]:
        """The refresh lease renewed every third of its length while a call that spends
        the refresh token is in flight. Were it to run out under a slow answer, another
        request would spend the same token, which auth takes for a stolen one: it ends
        the login."""
        done = asyncio.Event()
        until = time.monotonic() + LONGEST_RENEWAL

        async def renew() -> None:
            while time.monotonic() < until:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), REFRESH_LEASE / 3)
                if done.is_set():
                    return
                try:
                    if not await self.store.renew_refresh(self.session, REFRESH_LEASE):
                        return  # no longer ours: the session ended, or we were too late
                except Exception:  # the database: tried again at the next third
                    log.warning("could not renew a refresh lease", exc_info=True)

        renewing = asyncio.create_task(renew(), name="refresh-lease")
        try:
            yield
        finally:
            done.set()
            # Waited for even if this request is cancelled meanwhile: a renewal cut between
            # its write and noting the new lease would leave the lease held until it ran
            # out, as giving it back would not recognise it.
            cancelled = False
            while not renewing.done():
                try:
                    await asyncio.shield(renewing)
                except asyncio.CancelledError:
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError

    async def _abandon(self, pair: dict[str, Any]) -> None:
        """End at auth the login a pair nobody holds belongs to, rather than leave it
        among the account's live sessions until it expires. Best effort: it is of no use
        to anyone without its refresh token, which only this request ever saw."""
        try:
            await self.backend.call(
                "auth",
                "POST",
                "/v1/auth/logout",
                self.browser,
                json={"refresh_token": pair["refresh_token"]},
            )
        except ApiProblem as problem:
            log.warning("could not end an abandoned session at auth: %s", problem)

    async def _retrying(self, send: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await send()
        except ApiProblem as problem:
            if problem.status != 401 or self.refreshed:
                raise
        # Refused although unexpired: the key rotated, or the session ended elsewhere. One
        # refresh tells which.
        await self._refresh()
        try:
            return await send()
        except ApiProblem as problem:
            if problem.status == 401:
                await self.store.end(self.session)
                raise SessionEnded from problem
            raise

    def _tokens(self) -> Tokens:
        if self.session.tokens is None:
            raise SessionEnded
        return self.session.tokens

    async def _access_token(self) -> str:
        if self._tokens().access_expires_at - time.time() < EXPIRY_MARGIN:
            await self._refresh()
        return self._tokens().access_token

    async def _refresh(self) -> None:
        """Take the next pair: this request spends the refresh token if it wins the lease,
        or waits for the request that did."""
        if await self._claim():
            await self._spend_refresh_token()

    async def _claim(self) -> bool:
        """Wait for the refresh lease: True once this request holds it, False once another
        request has stored a new pair meanwhile (taken instead)."""
        read = self.session.version
        deadline = time.monotonic() + REFRESH_LEASE + 5
        while True:
            if await self.store.claim_refresh(self.session, REFRESH_LEASE):
                return True
            if not await self.store.reload_tokens(self.session):
                raise SessionEnded
            if self.session.version != read:
                self.refreshed = True
                return False
            if time.monotonic() > deadline:
                raise ApiProblem(503, "unavailable", "a token refresh is stuck")
            await asyncio.sleep(0.05)

    async def _spend_refresh_token(self) -> None:
        spent = False
        try:
            async with self._lease_kept():
                pair = await self.backend.call(
                    "auth",
                    "POST",
                    "/v1/auth/token/refresh",
                    self.browser,
                    json={"refresh_token": self._tokens().refresh_token},
                )
            spent = True
        except ApiProblem as problem:
            if problem.status in (400, 401, 403):  # invalid_grant: the family has ended
                spent = True
                await self.store.end(self.session)
                raise SessionEnded from problem
            raise
        finally:
            if not spent:
                await self.store.release_refresh(self.session)
        await self.store.store_tokens(self.session, tokens_from(pair))
        self.refreshed = True
