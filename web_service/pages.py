"""What every page handler works with: `Page`, one per request (the session, the language,
the API client for this browser), and the dependency aliases that demand a signed-in
visitor or an admin. Rendering and redirecting go through `Page`, which stores the session
and sets its cookie: HttpOnly, SameSite=Lax, Path=/, and Secure (with the `__Host-`
prefix) when the page was served over HTTPS.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from web_service import csrf
from web_service.api import ApiProblem, Backend, Browser, UserApi, claims_of, tokens_from
from web_service.config import WebSettings
from web_service.forms import read_form
from web_service.i18n import LANG_COOKIE, LANGUAGES, Translator, choose
from web_service.security import safe_next
from web_service.sessions import Session, SessionStore

log = logging.getLogger(__name__)

COOKIE = "session"
SECURE_COOKIE = "__Host-session"  # the prefix makes browsers insist on Secure, Path=/, no Domain


@dataclass
class Web:
    """The app's resources, owned by its lifespan."""

    settings: WebSettings
    store: SessionStore
    backend: Backend
    templates: Environment


class SignInRequired(Exception):
    """The page needs a signed-in visitor."""


class NotAdmin(Exception):
    """The page needs the admin role."""


class Page:
    def __init__(self, request: Request, web: Web, session: Session) -> None:
        self.request = request
        self.web = web
        self.session = session
        self.t = Translator(
            choose(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        )
        agent = "".join(c for c in request.headers.get("user-agent", "") if c.isprintable())
        self.browser = Browser(request.client.host if request.client else None, agent[:512] or None)

    @property
    def secure(self) -> bool:
        return self.request.url.scheme == "https"

    @cached_property
    def api(self) -> UserApi:
        return UserApi(self.web.backend, self.web.store, self.session, self.browser)

    async def call(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        """An API call as nobody in particular (sign-up, login...), for this browser."""
        return await self.web.backend.call(service, method, path, self.browser, **kwargs)

    @property
    def claims(self) -> dict[str, Any]:
        tokens = self.session.tokens
        return claims_of(tokens.access_token) if tokens else {}

    @property
    def is_admin(self) -> bool:
        return "admin" in self.claims.get("roles", [])

    @property
    def here(self) -> str:
        url = self.request.url
        return url.path + (f"?{url.query}" if url.query else "")

    def notice(self, key: str, **args: Any) -> None:
        """A message for the next page this browser sees."""
        self.session.set("notices", [*self.session.data.get("notices", []), [key, args]])

    async def form(self) -> dict[str, str]:
        """The posted form, after the CSRF checks (raises csrf.CsrfRejected)."""
        fields = await read_form(self.request)
        self.check_csrf(fields)
        return fields

    def check_csrf(self, fields: dict[str, str]) -> None:
        """The CSRF checks of a form read otherwise (raises csrf.CsrfRejected)."""
        csrf.check(self.request, self.session, fields, self.web.settings.public_origin)

    async def render(self, template: str, status: int = 200, **context: Any) -> Response:
        notices = [self.t(key, **args) for key, args in self.session.pop("notices", [])]
        html = self.web.templates.get_template(template).render(
            t=self.t,
            lang=self.t.lang,
            languages=LANGUAGES,
            page=self,
            notices=notices,
            signed_in=self.session.signed_in,
            email=self.session.data.get("email", ""),
            is_admin=self.is_admin,
            here=self.here,
            **context,
        )
        return await self.finish(HTMLResponse(html, status))

    async def redirect(self, url: str, **query: str) -> Response:
        target = url + (("&" if "?" in url else "?") + urlencode(query) if query else "")
        return await self.finish(RedirectResponse(target, 303))

    async def sign_in(self, pair: dict[str, Any], email: str) -> None:
        """Start a new session (new id) holding the pair; what the visitor was told carries
        over. A session this browser held until now (a sign-in again over it, as an
        application's prompt=login asks) is ended at auth too, as a logout would."""
        await self.end_at_auth()
        tokens = tokens_from(pair)
        keep = {
            "email": email,
            "notices": self.session.data.get("notices", []),
            "signed_in_at": time.time(),  # for an application's max_age (oauth_pages.py)
        }
        self.session = await self.web.store.sign_in(
            self.session, tokens, str(claims_of(tokens.access_token).get("sub", "")), keep
        )

    async def end_at_auth(self) -> None:
        """End this browser's session at auth (a logout there), if it holds one."""
        tokens = self.session.tokens
        if tokens is None:
            return
        body = {"refresh_token": tokens.refresh_token}
        try:
            await self.call("auth", "POST", "/v1/auth/logout", json=body)
        except ApiProblem as problem:  # it runs out at auth in its own time
            log.warning("could not end the session at auth: %s", problem)

    async def sign_out(self) -> None:
        await self.web.store.end(self.session)
        self.session = self.web.store.anonymous()

    async def finish(self, response: Response) -> Response:
        await self.web.store.save(self.session)
        name = SECURE_COOKIE if self.secure else COOKIE
        if self.session.stored and self.session.cookie:
            response.set_cookie(
                name,
                self.session.cookie,
                max_age=self.web.settings.session_max_seconds,
                path="/",
                secure=self.secure,
                httponly=True,
                samesite="lax",
            )
        elif not self.session.stored and name in self.request.cookies:
            # Ended, expired or unknown: the browser should stop sending it.
            response.delete_cookie(name, path="/", secure=self.secure, httponly=True)
        return response


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


async def get_page(request: Request) -> Page:
    web = web_of(request)
    name = SECURE_COOKIE if request.url.scheme == "https" else COOKIE
    session = await web.store.load(request.cookies.get(name))
    page = Page(request, web, session)
    request.state.page = page  # for the error handlers
    return page


PageDep = Annotated[Page, Depends(get_page)]


async def signed_in(page: PageDep) -> Page:
    if not page.session.signed_in:
        raise SignInRequired
    return page


SignedInDep = Annotated[Page, Depends(signed_in)]


async def admin(page: SignedInDep) -> Page:
    if not page.is_admin:
        raise NotAdmin
    return page


AdminDep = Annotated[Page, Depends(admin)]


def path_id(value: str, error: str) -> str:
    """An id from this site's path as the APIs spell it (a UUID); anything else is a 404
    page for `error` (`session_not_found`...), without a call."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiProblem(404, error) from None


def return_path(request: Request) -> str:
    """Where to come back to after signing in: this page, or for a form post the page the
    form was on."""
    if request.method == "GET":
        url = request.url
        return safe_next(url.path + (f"?{url.query}" if url.query else ""), "/")
    try:
        referer = urlsplit(request.headers.get("referer", ""))
    except ValueError:  # e.g. "http://[::1/": an unclosed IPv6 host
        return "/"
    if referer.netloc and referer.netloc != request.headers.get("host"):
        return "/"
    return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""), "/")
