"""The authorization endpoint of OAuth 2.0's authorization code grant with PKCE (RFC 6749
§4.1, RFC 7636): where an application in auth's AUTH_OAUTH_CLIENTS sends a person to sign
in, and gets a code back at its redirect URI to trade for their tokens at auth.

GET /oauth/authorize?response_type=code&client_id&redirect_uri&code_challenge
    &code_challenge_method=S256[&scope][&state][&nonce][&prompt][&max_age][&login_hint]
    [&dpop_jkt]

- A client_id and redirect_uri that auth does not pair, or a parameter given twice
  (which redirect URI would be meant?), are a page saying so: the browser is sent nowhere
  (§4.1.2.1). Every other refusal goes back to the redirect URI as `error` (with `state`
  and `iss`): an unsupported response type, no S256 challenge, and the person saying no
  (`access_denied`).
- The person signs in here first if they have not, any way this site offers, then is
  asked whether to allow the application (the answer is `POST /oauth/authorize`), unless
  auth calls it trusted (first-party) or they allowed it these scopes before (auth
  remembers a yes; their account's Applications page, `/account/applications`, takes it
  back). `prompt=none` asks nothing (`login_required`, `consent_required`),
  `prompt=consent` always asks, `prompt=login` and a `max_age` older than the sign-in send
  the person to the login page first (the ID token's `auth_time` says when they signed
  in; nobody is signed out by a link).
- A request the application pushed to auth first (RFC 9126: `?client_id&request_uri`)
  is read back from auth, whatever else the address says; only its request_uri goes
  through the sign-in and the consent form (`carried`), and a spent or expired one is a
  page saying so. A client that must push gets `invalid_request` for a request in the
  address.
- The code goes back to the redirect URI with `state` and `iss` (RFC 9207) through a page
  that moves on at once (a meta refresh, with a link). A redirect to another site right
  after a form post (the login's, the consent's) would break the pages' `form-action
  'self'` policy.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter
from fastapi.responses import Response

from common import authorization
from web_service.api import ApiProblem, SessionEnded
from web_service.forms import read_form, read_form_items
from web_service.pages import Page, PageDep, SignedInDep, path_id
from web_service.security import safe_next

router = APIRouter()

PATH = "/oauth/authorize"
# With a pushed request's request_uri (RFC 9126), which holds the others.
PARAMS = (*authorization.PARAMS, "request_uri")
CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")  # as auth's settings allow them


def asked_of(
    items: list[tuple[str, str]], names: tuple[str, ...] = PARAMS
) -> dict[str, str] | None:
    """The request's parameters, or None if one is given twice (RFC 6749 §3.1)."""
    values: dict[str, str] = {}
    for name, value in items:
        if name in names:
            if name in values:
                return None
            values[name] = value
    return values


def back(redirect_uri: str, **answer: str) -> str:
    """The redirect URI with the answer added to its query (§3.1.2: kept as it is)."""
    query = urlencode({name: value for name, value in answer.items() if value})
    if not query:
        return redirect_uri
    return redirect_uri + ("&" if "?" in redirect_uri else "?") + query


def refusal(values: dict[str, str]) -> tuple[str, str] | None:
    """What is wrong with a request from a known client, as an `error` and its words."""
    if refused := authorization.refusal(values):
        return refused
    if again(values) == "/":  # too long to carry through a sign-in
        return "invalid_request", "the request is too long"
    return None


async def client_of(page: Page, values: dict[str, str] | None) -> dict[str, Any] | None:
    """Auth's word on the client, with the request it pushed where `values` name one by
    its request_uri; or None where it has no such client and redirect URI. A request_uri
    that names no live request is auth's ApiProblem `invalid_request_uri`."""
    if values is None or not values.get("client_id"):
        return None
    if names_pushed(values):
        named = {"client_id": values["client_id"], "request_uri": values["request_uri"]}
    elif values.get("redirect_uri"):
        named = {"client_id": values["client_id"], "redirect_uri": values["redirect_uri"]}
    else:
        return None
    try:
        found: dict[str, Any] = await page.call("auth", "POST", "/v1/auth/oauth/client", json=named)
    except ApiProblem as problem:
        if problem.status in (400, 422) and problem.error != "invalid_request_uri":
            return None
        raise
    return found


@router.get(PATH)
async def authorize_page(page: PageDep) -> Response:
    return await answer(page, asked_of(page.request.query_params.multi_items()), None)


@router.post(PATH)
async def decide(page: SignedInDep) -> Response:
    fields = await page.form()
    return await answer(page, asked_of(list(fields.items())), fields.get("decision") == "allow")


async def answer(page: Page, values: dict[str, str] | None, allowed: bool | None) -> Response:
    """The next step for an authorization request (module docstring); `allowed`: the
    person's answer on the consent page, None before they were asked."""
    try:
        client = await client_of(page, values)
    except ApiProblem as problem:
        if problem.error != "invalid_request_uri":
            raise
        return await link_refused(
            page, page.t("oauth.expired_title"), page.t("oauth.expired_detail")
        )
    if values is None or client is None:
        return await link_refused(
            page, page.t("oauth.unknown_title"), page.t("oauth.unknown_detail")
        )
    pushed = client["request"] is not None
    if pushed:  # the pushed request (checked when pushed), whatever the address says
        values = {**client["request"], "request_uri": values["request_uri"]}

    async def go_back(**answer: str) -> Response:
        target = back(
            values["redirect_uri"], **answer, state=values.get("state", ""), iss=client["issuer"]
        )
        return await page.render("oauth_continue.html", target=target, client=client)

    if not pushed and (refused := refusal(values)):
        return await go_back(error=refused[0], error_description=refused[1])
    if not pushed and client["require_pushed_authorization_requests"]:
        return await go_back(
            error="invalid_request",
            error_description="this client pushes its authorization requests (RFC 9126)",
        )
    prompt = values.get("prompt", "")
    if not page.session.signed_in:
        if prompt == "none":
            return await go_back(error="login_required")
        return await to_login(page, values)
    # A pushed request's prompt=login and max_age are auth's to check, by its clock
    # (`login_required` below), as it saw the sign-in and the push.
    fresh = prompt == "login" or too_old(page, values.get("max_age"))
    if allowed is None and not pushed and fresh:
        if prompt == "none":  # an exceeded max_age, and no page may be shown
            return await go_back(error="login_required")
        # Sign in afresh first (the ID token's auth_time says when).
        return await to_login(page, values)
    if allowed is False:
        return await go_back(error="access_denied")
    if allowed is None and prompt == "consent":
        return await ask(page, client, values)
    asked: dict[str, str | int | bool]
    if pushed:  # auth holds the rest, and spends it with the code
        asked = {"client_id": values["client_id"], "request_uri": values["request_uri"]}
    else:
        asked = {
            name: values[name]
            for name in (
                "client_id",
                "redirect_uri",
                "code_challenge",
                "scope",
                "nonce",
                "dpop_jkt",
            )
            if values.get(name)
        }
        if "max_age" in values:
            asked["max_age"] = int(values["max_age"])
    if allowed:
        asked["consented"] = True
    try:
        granted = await page.api.call("auth", "POST", "/v1/auth/oauth/authorize", json=asked)
    except SessionEnded:  # the sign-in behind this page ended meanwhile
        if prompt != "none":
            raise  # to the login page, and back here
        await page.sign_out()
        return await go_back(error="login_required")
    except ApiProblem as problem:
        if problem.error == "consent_required":  # not allowed these scopes before
            if prompt == "none":
                return await go_back(error="consent_required")
            return await ask(page, client, values)
        if problem.error == "invalid_request_uri":  # it gave a code already (another tab)
            return await link_refused(
                page, page.t("oauth.expired_title"), page.t("oauth.expired_detail")
            )
        if problem.error != "login_required":  # signed in longer ago than max_age
            raise
        if prompt == "none":
            return await go_back(error="login_required")
        return await to_login(page, values)
    return await go_back(code=granted["code"])


async def ask(page: Page, client: dict[str, Any], values: dict[str, str]) -> Response:
    """The consent page: whether to allow the application what it asks for."""
    kept = {name: value for name, value in carried(values).items() if name != "prompt"}
    parts = urlsplit(values["redirect_uri"])
    return await page.render(
        "oauth_consent.html",
        client=client,
        fields=kept,
        scopes=[name for name in values.get("scope", "").split() if name in client["scopes"]],
        destination=parts.netloc or f"{parts.scheme}:",
    )


@router.get("/account/applications")
async def applications(page: SignedInDep) -> Response:
    """The applications the person allowed, each with "remove access"."""
    listed = await page.api.call("auth", "GET", "/v1/auth/oauth/consents")
    return await page.render("applications.html", applications=listed["items"])


@router.post("/account/applications/remove")
async def remove_application(page: SignedInDep) -> Response:
    client_id = (await page.form()).get("client_id", "")
    if not CLIENT_ID.fullmatch(client_id) or not client_id.strip("."):  # "..": a path
        raise ApiProblem(404, "consent_not_found")
    try:
        await page.api.call("auth", "DELETE", f"/v1/auth/oauth/consents/{client_id}")
    except ApiProblem as problem:
        if problem.error != "consent_not_found":  # removed already (another tab)
            raise
    page.notice("notice.application_removed")
    return await page.redirect("/account/applications")


async def link_refused(page: Page, title: str, detail: str) -> Response:
    """The page for a link that names no application of ours, or an address it did not
    register: it says so, and sends the browser nowhere."""
    return await page.render("error.html", status=400, title=title, detail=detail)


async def to_login(page: Page, values: dict[str, str]) -> Response:
    """The login page, coming back to this request once signed in; with the address
    field filled in where the application gave an address as OpenID Connect's
    `login_hint` (anything else there is only a hint, and is left)."""
    hint = values.get("login_hint", "")
    if 3 <= len(hint) <= 254 and "@" in hint:
        return await page.redirect("/login", next=again(values), email=hint)
    return await page.redirect("/login", next=again(values))


def again(values: dict[str, str]) -> str:
    """This request, to come back to once signed in (without `prompt=login` and `max_age`:
    the sign-in they asked for is the one just made; `prompt=consent` still asks. A pushed
    request keeps them, and auth tells a sign-in made since the push)."""
    kept = {
        name: value
        for name, value in carried(values).items()
        if name != "max_age" and (name, value) != ("prompt", "login")
    }
    return safe_next(f"{PATH}?{urlencode(kept)}", "/")


def names_pushed(values: dict[str, str]) -> bool:
    """Whether a request is one pushed to auth, by a request_uri of the kind auth hands
    out (RFC 9126). Another request_uri (a request object by reference, OpenID Connect
    Core §6.2, which is not taken) is ignored, as it always was."""
    return values.get("request_uri", "").startswith(authorization.REQUEST_URI_PREFIX)


def carried(values: dict[str, str]) -> dict[str, str]:
    """What a request carries through the sign-in and the consent form: of a pushed one,
    its client_id and request_uri alone (auth holds the rest), so the browser cannot
    change it on the way."""
    if names_pushed(values):
        return {"client_id": values["client_id"], "request_uri": values["request_uri"]}
    return values


def too_old(page: Page, max_age: str | None) -> bool:
    """Whether this browser signed in longer than `max_age` seconds ago (auth checks it
    again when it hands out the code)."""
    if max_age is None:
        return False
    signed_in_at = page.session.data.get("signed_in_at")
    return not isinstance(signed_in_at, float) or time.time() - signed_in_at > int(max_age)


# --- RP-initiated logout -------------------------------------------------------------------

LOGOUT_PATH = "/oauth/logout"
# OpenID Connect RP-Initiated Logout §2's parameters that are used; ui_locales and
# logout_hint are ignored (the page speaks the visitor's language; the hint names them).
LOGOUT_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")


@router.get(LOGOUT_PATH)
async def logout_page(page: PageDep) -> Response:
    items = page.request.query_params.multi_items()
    return await log_out(page, asked_of(items, LOGOUT_PARAMS), None)


@router.post(LOGOUT_PATH)
async def logout_decide(page: PageDep) -> Response:
    """The application's request by form post (§2: as the link, so without this site's
    CSRF token, and it changes nothing), or the person's answer (which must carry it,
    where there is a session to end)."""
    items, fields = await read_form_items(page.request), await read_form(page.request)
    decision = fields.get("decision")
    if decision is not None and page.session.signed_in:
        page.check_csrf(fields)
    return await log_out(page, asked_of(items, LOGOUT_PARAMS), decision)


async def log_out(page: Page, values: dict[str, str] | None, decision: str | None) -> Response:
    """An application asks to sign the person out of this site (OpenID Connect
    RP-Initiated Logout). Auth checks what it names; a signed-in person is asked (a link
    alone signs nobody out), and "Log out" ends this browser's session and, where the ID
    token hint names one of theirs, the application's. Then the browser goes back to the
    application's registered post-logout address, with `state`, or to the login page."""
    checked = await logout_request_of(page, values)
    if values is None or checked is None:
        title, detail = page.t("oauth.logout_unknown_title"), page.t("oauth.logout_unknown_detail")
        return await link_refused(page, title, detail)
    if page.session.signed_in and decision is None:
        return await page.render("oauth_logout.html", application=checked["name"], fields=values)
    if page.session.signed_in and decision == "logout":
        await end_application_session(page, checked)
        await page.end_at_auth()
        await page.sign_out()
        page.notice("notice.signed_out")
    target = checked["post_logout_redirect_uri"]
    if target is None:
        return await page.redirect("/films" if page.session.signed_in else "/login")
    # Through the page that moves on (after a form post, the pages' form-action policy
    # would stop a redirect to another site).
    target = back(target, state=values.get("state", ""))
    return await page.render("oauth_continue.html", target=target, client=checked)


async def logout_request_of(page: Page, values: dict[str, str] | None) -> dict[str, Any] | None:
    """Auth's check of the request, or None where it refuses it."""
    if values is None:
        return None
    asked = {name: values[name] for name in LOGOUT_PARAMS[:3] if values.get(name)}
    try:
        checked: dict[str, Any] = await page.call(
            "auth", "POST", "/v1/auth/oauth/logout-request", json=asked
        )
    except ApiProblem as problem:
        if problem.status in (400, 422):
            return None
        raise
    return checked


async def end_application_session(page: Page, checked: dict[str, Any]) -> None:
    """The application's session its ID token hint names, if it is this person's."""
    if not checked["sid"] or checked["sub"] != page.claims.get("sub"):
        return
    try:
        sid = path_id(checked["sid"], "session_not_found")
        await page.api.call("auth", "DELETE", f"/v1/auth/sessions/{sid}")
    except (ApiProblem, SessionEnded):  # ended already; or this browser's own has
        pass
