"""Passkeys (WebAuthn): signing in with one from the login page, and the account's list of
them, with adding and removing.

The browser makes and uses the passkey (`navigator.credentials`); static/app.js carries
auth's options to it and its answer back, as a form field of an ordinary form post, which
this service hands to auth. The script is needed for passkeys alone: without it, or in a
browser without passkeys, the passkey buttons stay hidden and the pages say why, and
everything else works.

- Signing in is one click: the script asks for options (`POST /login/passkey/options`,
  answered in JSON), the browser signs them with a passkey the visitor picks, and the
  script posts the answer to `POST /login/passkey`. Where the browser can, the login page
  also asks as it opens, and the browser offers the passkeys among the address field's
  suggestions (autofill), so picking one there is the click.
- Adding asks for the password first (auth checks it, then hands out options that the
  next page carries for the script), then the browser makes the passkey and the script
  posts it to `POST /account/passkeys`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from web_service.api import ApiProblem
from web_service.forms import FORM_LEVEL, Form, explain
from web_service.pages import Page, PageDep, SignedInDep, path_id
from web_service.security import safe_next

router = APIRouter()

NAME_LENGTH = 64  # auth's limit on a passkey's name
DEPTH = 8  # lists and objects in an answer nest 3 deep; more is not an answer


def credential_of(fields: dict[str, str]) -> dict[str, Any] | None:
    """The browser's answer, posted as JSON in the `credential` field, or None when it is
    no JSON object that can be sent on as it came (auth judges the rest): not JSON, nested
    deeper than an answer is, or holding what JSON may not carry on (NaN, a lone
    surrogate)."""
    try:
        value = json.loads(fields.get("credential", ""))
        if not isinstance(value, dict) or not shallow(value, DEPTH):
            return None
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    return value


def shallow(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` lists and objects deep (without recursing)."""
    waiting = [(value, 1)]
    while waiting:
        item, depth = waiting.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            waiting.extend((child, depth + 1) for child in children)
    return True


def refusal(problem: ApiProblem, page: Page) -> dict[str, str]:
    """`explain`, with auth's "this session did not pass two-step sign-in" told as what to
    do about it here."""
    if problem.error == "mfa_session_required":
        return {FORM_LEVEL: page.t("error.passkey_mfa_session")}
    return explain(problem, page.t)


# --- signing in ----------------------------------------------------------------------------


@router.post("/login/passkey/options")
async def sign_in_options(page: PageDep) -> Response:
    """Auth's options for `navigator.credentials.get`, for the script: `{publicKey}`, or
    `{error, message}` with the refusal's status."""
    await page.form()
    try:
        answer = await page.call("auth", "POST", "/v1/auth/login/passkey/options")
    except ApiProblem as problem:
        message = next(iter(explain(problem, page.t).values()))
        said = JSONResponse({"error": problem.error, "message": message}, problem.status)
        if problem.retry_after:
            said.headers["Retry-After"] = str(problem.retry_after)
        return await page.finish(said)
    return await page.finish(JSONResponse({"publicKey": answer["publicKey"]}))


async def email_for(page: Page, pair: dict[str, Any]) -> str:
    """The address a passkey signed in to, for the page's footer (the token does not carry
    it); empty if auth cannot say right now (the account page asks again)."""
    try:
        me = await page.web.backend.call(
            "auth", "GET", "/v1/auth/me", page.browser, token=pair["access_token"]
        )
    except ApiProblem:
        return ""
    return str(me.get("email", ""))


@router.post("/login/passkey")
async def sign_in(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    form = Form()
    credential = credential_of(fields)
    if credential is None:
        form.errors[FORM_LEVEL] = page.t("error.passkey_not_accepted")
    else:
        try:
            pair = await page.call(
                "auth", "POST", "/v1/auth/login/passkey", json={"credential": credential}
            )
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            await page.sign_in(pair, await email_for(page, pair))
            return await page.redirect(next_page)
    # No autofill on the page that says a passkey failed: it would offer the same again.
    return await page.render(
        "login.html", status=400, form=form, next=next_page, unverified=False, autofill=False
    )


# --- the account's passkeys ----------------------------------------------------------------


async def list_page(page: Page, form: Form, status: int = 200) -> Response:
    listed = await page.api.call("auth", "GET", "/v1/auth/passkeys")
    return await page.render("passkeys.html", status=status, form=form, passkeys=listed["items"])


@router.get("/account/passkeys")
async def passkeys(page: SignedInDep) -> Response:
    return await list_page(page, Form())


@router.post("/account/passkeys/new")
async def new_passkey(page: SignedInDep) -> Response:
    """The password checked, then the page on which the browser makes the passkey."""
    fields = await page.form()
    form = Form({"name": " ".join(fields.get("name", "").split())})
    password = fields.get("password", "")
    if len(form.value("name")) > NAME_LENGTH:  # said now, not after the passkey is made
        form.errors["name"] = page.t("error.too_long")
    elif not password:
        form.errors["password"] = page.t("error.required")
    else:
        try:
            answer = await page.api.call(
                "auth", "POST", "/v1/auth/passkeys/options", json={"password": password}
            )
        except ApiProblem as problem:
            form.errors = refusal(problem, page)
        else:
            options = json.dumps(answer["publicKey"], separators=(",", ":"))
            return await page.render("passkey_create.html", options=options, form=form)
    return await list_page(page, form, status=400)


@router.post("/account/passkeys")
async def add_passkey(page: SignedInDep) -> Response:
    fields = await page.form()
    name = " ".join(fields.get("name", "").split())[:NAME_LENGTH]
    form = Form({"name": name})
    credential = credential_of(fields)
    if credential is None:
        form.errors[FORM_LEVEL] = page.t("error.invalid_passkey")
    else:
        body = {"credential": credential, "locale": page.t.lang} | ({"name": name} if name else {})
        try:
            await page.api.call("auth", "POST", "/v1/auth/passkeys", json=body)
        except ApiProblem as problem:
            form.errors = refusal(problem, page)
        else:
            page.notice("notice.passkey_added")
            return await page.redirect("/account/passkeys")
    return await list_page(page, form, status=400)


@router.post("/account/passkeys/{passkey_id}/remove")
async def remove_passkey(page: SignedInDep, passkey_id: str) -> Response:
    await page.form()
    passkey = path_id(passkey_id, "passkey_not_found")
    try:
        await page.api.call("auth", "DELETE", f"/v1/auth/passkeys/{passkey}")
    except ApiProblem as problem:
        if problem.error != "passkey_not_found":  # removed meanwhile: what was asked for
            raise
    page.notice("notice.passkey_removed")
    return await page.redirect("/account/passkeys")
