"""Two-step sign-in: a code from an authenticator app (TOTP) after the password or the
emailed code, or one of ten single-use recovery codes.

Signing in: when auth answers a right password or emailed code with `mfa_required`, the
`mfa_token` it gives for the second step is kept in the server-side session (sealed with
the rest) and never put in a page or a URL. It is dropped once spent, and once auth says it
no longer holds (expired, used, too many wrong codes): the visitor then starts again from
the login page.

The account's section: turn it on (the password; then the QR code, the secret and the
app's first code), turn it off, and new recovery codes (the password and a code each). The
secret waits in the session between the two steps of turning on; recovery codes are shown
once, in the answer to the form that made them, and kept nowhere here.
"""

from __future__ import annotations

import time
from typing import Any

import segno
from fastapi import APIRouter
from fastapi.responses import Response
from markupsafe import Markup

from web_service.api import ApiProblem
from web_service.forms import FORM_LEVEL, Form, explain
from web_service.i18n import Translator
from web_service.pages import Page, PageDep, SignedInDep
from web_service.security import safe_next

router = APIRouter()

SIGN_IN = "two_step_sign_in"  # session key: {"token", "email", "until"}
SETUP = "two_step_setup"  # session key: {"secret", "uri", "until"}, until the first code
SETUP_SECONDS = 15 * 60  # the secret stays in the session (and on screen) this long
UNSAID_LIFETIME = 300.0  # seconds an mfa_token lives when auth does not say (its default)


def grouped(secret: str, size: int = 4) -> str:
    """The secret in groups, as people copy it into an app by hand ("JBSW Y3DP ...")."""
    return " ".join(secret[i : i + size] for i in range(0, len(secret), size))


def qr_code(uri: str, title: str) -> Markup:
    """The otpauth URI as an inline SVG QR code: paths and attributes only, no inline style
    or script, so the page's Content-Security-Policy lets it show."""
    svg = segno.make(uri, error="m").svg_inline(
        border=4, omitsize=True, title=title, svgclass="qr", dark="#000", light="#fff"
    )
    # segno escapes the title; the rest is its own markup, with nothing from outside in it.
    return Markup(svg.replace("<svg ", '<svg role="img" ', 1))  # noqa: S704


def explain_code(problem: ApiProblem, t: Translator, message: str) -> dict[str, str]:
    """`explain`, with a wrong or malformed code told as the app's, not the email's."""
    errors = explain(problem, t)
    if "code" in errors and problem.status in (400, 422):
        errors["code"] = t(message)
    if problem.error == "too_many_code_attempts":  # the app's budget, not the address's
        errors[FORM_LEVEL] = t("error.two_step_too_many", n=problem.retry_after or 60)
    return errors


# --- the second step of signing in ---------------------------------------------------------


async def start_sign_in(
    page: Page, problem: ApiProblem, email: str, next_page: str
) -> Response | None:
    """The page for the second step, if auth asked for one; else None."""
    token, lifetime = problem.body.get("mfa_token"), problem.body.get("expires_in")
    if problem.error != "mfa_required" or not isinstance(token, str):
        return None
    seconds = float(lifetime) if isinstance(lifetime, int | float) else UNSAID_LIFETIME
    page.session.set(SIGN_IN, {"token": token, "email": email, "until": time.time() + seconds})
    return await page.redirect("/login/two-step", next=next_page)


def waiting_sign_in(page: Page) -> dict[str, Any] | None:
    waiting = page.session.data.get(SIGN_IN)
    if isinstance(waiting, dict) and float(waiting.get("until", 0)) > time.time():
        return waiting
    return None


async def start_again(page: Page, next_page: str) -> Response:
    """Back to the login page: the second step's token has run out, or there is none."""
    if page.session.pop(SIGN_IN) is not None:
        page.notice("notice.two_step_expired")
    return await page.redirect("/login", next=next_page)


async def second_step_page(page: Page, form: Form, next_page: str, status: int = 200) -> Response:
    return await page.render("login_two_step.html", status=status, form=form, next=next_page)


@router.get("/login/two-step")
async def second_step_form(page: PageDep, next: str | None = None) -> Response:
    if waiting_sign_in(page) is None:
        return await start_again(page, safe_next(next))
    return await second_step_page(page, Form(), safe_next(next))


@router.post("/login/two-step")
async def second_step(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    waiting = waiting_sign_in(page)
    if waiting is None:
        return await start_again(page, next_page)
    form = Form({"code": fields.get("code", "").strip()})
    if form.require(page.t, "code"):
        body = {"mfa_token": waiting["token"], "code": form.value("code")}
        try:
            pair = await page.call("auth", "POST", "/v1/auth/login/mfa", json=body)
        except ApiProblem as problem:
            if problem.error == "invalid_mfa_token" or problem.body.get("tries_left") == 0:
                return await start_again(page, next_page)  # spent: no use trying it again
            if problem.error == "account_disabled":  # nothing to try again: say so there
                page.session.pop(SIGN_IN)
                page.notice("notice.account_disabled")
                return await page.redirect("/login", next=next_page)
            form.errors = explain_code(problem, page.t, "error.two_step_code")
        else:
            await page.sign_in(pair, str(waiting["email"]))  # a new session: the token is gone
            return await page.redirect(next_page)
    return await second_step_page(page, form, next_page, status=400)


# --- the account's section: on, off, new recovery codes ------------------------------------


async def recovery_codes_page(page: Page, answer: dict[str, Any]) -> Response:
    return await page.render("two_step_codes.html", codes=answer["recovery_codes"])


@router.get("/account/two-step/on")
async def turn_on_form(page: SignedInDep) -> Response:
    return await page.render("two_step_on.html", form=Form())


@router.post("/account/two-step/on")
async def turn_on(page: SignedInDep) -> Response:
    fields = await page.form()
    form = Form({"password": fields.get("password", "")})
    if form.require(page.t, "password"):
        try:
            setup = await page.api.call("auth", "POST", "/v1/auth/mfa/totp", json=form.values)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            pending = {
                "secret": setup["secret"],
                "uri": setup["otpauth_uri"],
                "until": time.time() + SETUP_SECONDS,
            }
            page.session.set(SETUP, pending)
            return await page.redirect("/account/two-step/setup")
    return await page.render("two_step_on.html", status=400, form=form)


async def setup_page(page: Page, form: Form, status: int = 200) -> Response:
    setup = page.session.data.get(SETUP)
    if not isinstance(setup, dict):  # not started here, or confirmed meanwhile
        return await page.redirect("/account/two-step/on")
    if float(setup.get("until", 0)) < time.time():  # the secret is not shown for ever
        page.session.pop(SETUP)
        page.notice("notice.two_step_setup_lapsed")
        return await page.redirect("/account/two-step/on")
    return await page.render(
        "two_step_setup.html",
        status=status,
        form=form,
        qr=qr_code(setup["uri"], page.t("two_step.qr_title")),
        secret=grouped(setup["secret"]),
    )


@router.get("/account/two-step/setup")
async def setup_form(page: SignedInDep) -> Response:
    return await setup_page(page, Form())


@router.post("/account/two-step/setup")
async def confirm_setup(page: SignedInDep) -> Response:
    fields = await page.form()
    form = Form({"code": fields.get("code", "").strip()})
    if SETUP in page.session.data and form.require(page.t, "code"):
        try:
            body = {**form.values, "locale": page.t.lang}  # of the notice email
            answer = await page.api.call("auth", "POST", "/v1/auth/mfa/totp/confirm", json=body)
        except ApiProblem as problem:
            if problem.error == "mfa_setup_not_started":  # replaced elsewhere, or run out
                page.session.pop(SETUP)
                page.notice("notice.two_step_setup_lapsed")
                return await page.redirect("/account/two-step/on")
            if problem.error == "mfa_already_enabled":  # confirmed meanwhile, elsewhere
                # (or by this very form, whose answer was lost): its codes may never have
                # been shown.
                page.session.pop(SETUP)
                page.notice("notice.two_step_on_codes_unseen")
                return await page.redirect("/account")
            form.errors = explain_code(problem, page.t, "error.two_step_setup_code")
        else:
            page.session.pop(SETUP)
            page.notice("notice.two_step_on")
            return await recovery_codes_page(page, answer)
    return await setup_page(page, form, status=400)


async def with_password_and_code(page: Page, method: str, path: str) -> tuple[Form, Any]:
    """The posted password and code sent to auth: the form (with the errors if refused)
    and auth's answer."""
    fields = await page.form()
    form = Form({"password": fields.get("password", ""), "code": fields.get("code", "").strip()})
    answer = None
    if form.require(page.t, "password", "code"):
        try:
            body = {**form.values, "locale": page.t.lang}  # of a notice email
            answer = await page.api.call("auth", method, path, json=body)
        except ApiProblem as problem:
            form.errors = explain_code(problem, page.t, "error.two_step_code")
    return form, answer


@router.get("/account/two-step/off")
async def turn_off_form(page: SignedInDep) -> Response:
    return await page.render("two_step_confirm.html", form=Form(), kind="off")


@router.post("/account/two-step/off")
async def turn_off(page: SignedInDep) -> Response:
    form, _ = await with_password_and_code(page, "DELETE", "/v1/auth/mfa/totp")
    if not form.errors:
        page.notice("notice.two_step_off")
        return await page.redirect("/account")
    return await page.render("two_step_confirm.html", status=400, form=form, kind="off")


@router.get("/account/two-step/recovery-codes")
async def new_codes_form(page: SignedInDep) -> Response:
    return await page.render("two_step_confirm.html", form=Form(), kind="codes")


@router.post("/account/two-step/recovery-codes")
async def new_codes(page: SignedInDep) -> Response:
    form, answer = await with_password_and_code(page, "POST", "/v1/auth/mfa/recovery-codes")
    if not form.errors:
        page.notice("notice.recovery_codes_replaced")
        return await recovery_codes_page(page, answer)
    return await page.render("two_step_confirm.html", status=400, form=form, kind="codes")
