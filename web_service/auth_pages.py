"""Signing up and in: sign up, confirm the address with the emailed code (and send it
again, after a cooldown), log in with a password or with an emailed code (then, for an
account with two-step sign-in, `two_step_pages`), forgotten password, log out, and the
language switch."""

from __future__ import annotations

import logging
import math
import time

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from web_service.api import ApiProblem
from web_service.forms import FORM_LEVEL, Form, explain
from web_service.i18n import LANG_COOKIE, LANGUAGES
from web_service.pages import Page, PageDep
from web_service.security import safe_next
from web_service.two_step_pages import start_sign_in

log = logging.getLogger(__name__)

router = APIRouter()


def wait_left(page: Page, key: str) -> int:
    """Seconds until the "send again" button stored under `key` may be used."""
    return max(0, math.ceil(float(page.session.data.get(key, 0)) - time.time()))


def start_cooldown(page: Page, key: str) -> None:
    page.session.set(key, time.time() + page.web.settings.resend_cooldown_seconds)


def email_of(fields: dict[str, str]) -> str:
    return fields.get("email", "").strip()


@router.get("/")
async def home(page: PageDep) -> Response:
    if page.session.signed_in:
        return await page.redirect("/films")
    return await page.render("home.html")


@router.get("/lang/{lang}")
async def switch_language(page: PageDep, lang: str, next: str | None = None) -> Response:
    response = RedirectResponse(safe_next(next, "/"), 303)
    if lang in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 24 * 3600,
            path="/",
            samesite="lax",
            httponly=True,
            secure=page.secure,
        )
    return response


# --- sign up and confirm the address -------------------------------------------------------


@router.get("/signup")
async def signup_form(page: PageDep) -> Response:
    return await page.render("signup.html", form=Form())


@router.post("/signup")
async def signup(page: PageDep) -> Response:
    fields = await page.form()
    form = Form({"email": email_of(fields), "password": fields.get("password", "")})
    if form.require(page.t, "email", "password"):
        body = {"email": form.value("email"), "password": form.value("password")}
        try:
            await page.call("auth", "POST", "/v1/auth/signup", json=body | {"locale": page.t.lang})
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            page.session.set("verify_email", form.value("email"))
            start_cooldown(page, "verify_resend_at")
            page.notice("notice.code_sent", email=form.value("email"))
            return await page.redirect("/verify")
    return await page.render("signup.html", status=400, form=form)


async def verify_page(page: Page, form: Form, status: int = 200) -> Response:
    form.values.setdefault("email", page.session.data.get("verify_email", ""))
    wait = wait_left(page, "verify_resend_at")
    return await page.render("verify.html", status=status, form=form, wait=wait)


@router.get("/verify")
async def verify_form(page: PageDep) -> Response:
    return await verify_page(page, Form())


@router.post("/verify")
async def verify(page: PageDep) -> Response:
    fields = await page.form()
    form = Form({"email": email_of(fields), "code": fields.get("code", "").strip()})
    if form.require(page.t, "email", "code"):
        try:
            pair = await page.call("auth", "POST", "/v1/auth/verify", json=form.values)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            page.notice("notice.verified")
            await page.sign_in(pair, form.value("email"))
            return await page.redirect("/films")
    return await verify_page(page, form, status=400)


@router.post("/verify/resend")
async def resend(page: PageDep) -> Response:
    fields = await page.form()
    form = Form({"email": email_of(fields)})
    if not form.require(page.t, "email"):
        return await verify_page(page, form, status=400)
    if wait := wait_left(page, "verify_resend_at"):
        form.errors[FORM_LEVEL] = page.t("error.wait_to_resend", n=wait)
        return await verify_page(page, form, status=429)
    body = {"email": form.value("email"), "locale": page.t.lang}
    try:
        await page.call("auth", "POST", "/v1/auth/verify/resend", json=body)
    except ApiProblem as problem:
        form.errors = explain(problem, page.t)
        return await verify_page(page, form, status=400)
    page.session.set("verify_email", form.value("email"))
    start_cooldown(page, "verify_resend_at")
    page.notice("notice.code_resent", email=form.value("email"))
    return await page.redirect("/verify")


# --- log in with a password ----------------------------------------------------------------


@router.get("/login")
async def login_form(page: PageDep, next: str | None = None, email: str | None = None) -> Response:
    """`email` fills in the address (an application's `login_hint`, through /oauth/authorize)."""
    form = Form({"email": email} if email and len(email) <= 254 else {})
    return await page.render(
        "login.html", form=form, next=safe_next(next), unverified=False, autofill=True
    )


@router.post("/login")
async def login(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    form = Form({"email": email_of(fields), "password": fields.get("password", "")})
    problem: ApiProblem | None = None
    if form.require(page.t, "email", "password"):
        try:
            pair = await page.call("auth", "POST", "/v1/auth/login", json=form.values)
        except ApiProblem as refused:
            if second_step := await start_sign_in(page, refused, form.value("email"), next_page):
                return second_step
            problem = refused
            form.errors = explain(problem, page.t)
        else:
            await page.sign_in(pair, form.value("email"))
            return await page.redirect(next_page)
    unverified = problem is not None and problem.error == "email_not_verified"
    if unverified:
        page.session.set("verify_email", form.value("email"))
    return await page.render(
        "login.html", status=400, form=form, next=next_page, unverified=unverified, autofill=True
    )


# --- log in with an emailed code -----------------------------------------------------------


@router.get("/login/code")
async def login_code_form(page: PageDep, next: str | None = None) -> Response:
    return await page.render("login_code.html", form=Form(), next=safe_next(next))


async def request_login_code(page: Page, email: str) -> ApiProblem | None:
    try:
        await page.call(
            "auth", "POST", "/v1/auth/login/code", json={"email": email, "locale": page.t.lang}
        )
    except ApiProblem as problem:
        return problem
    page.session.set("login_code_email", email)
    start_cooldown(page, "login_code_resend_at")
    return None


@router.post("/login/code")
async def login_code(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    form = Form({"email": email_of(fields)})
    if form.require(page.t, "email"):
        if (problem := await request_login_code(page, form.value("email"))) is None:
            page.notice("notice.login_code_sent", email=form.value("email"))
            return await page.redirect("/login/code/verify", next=next_page)
        form.errors = explain(problem, page.t)
    return await page.render("login_code.html", status=400, form=form, next=next_page)


async def login_code_page(page: Page, form: Form, next_page: str, status: int = 200) -> Response:
    form.values.setdefault("email", page.session.data.get("login_code_email", ""))
    wait = wait_left(page, "login_code_resend_at")
    return await page.render(
        "login_code_verify.html", status=status, form=form, next=next_page, wait=wait
    )


@router.get("/login/code/verify")
async def login_code_verify_form(page: PageDep, next: str | None = None) -> Response:
    return await login_code_page(page, Form(), safe_next(next))


@router.post("/login/code/verify")
async def login_code_verify(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    form = Form({"email": email_of(fields), "code": fields.get("code", "").strip()})
    if form.require(page.t, "email", "code"):
        try:
            pair = await page.call("auth", "POST", "/v1/auth/login/code/verify", json=form.values)
        except ApiProblem as problem:
            if second_step := await start_sign_in(page, problem, form.value("email"), next_page):
                return second_step
            form.errors = explain(problem, page.t)
        else:
            await page.sign_in(pair, form.value("email"))
            return await page.redirect(next_page)
    return await login_code_page(page, form, next_page, status=400)


@router.post("/login/code/resend")
async def login_code_resend(page: PageDep) -> Response:
    fields = await page.form()
    next_page = safe_next(fields.get("next"))
    form = Form({"email": email_of(fields)})
    if not form.require(page.t, "email"):
        return await login_code_page(page, form, next_page, status=400)
    if wait := wait_left(page, "login_code_resend_at"):
        form.errors[FORM_LEVEL] = page.t("error.wait_to_resend", n=wait)
        return await login_code_page(page, form, next_page, status=429)
    if problem := await request_login_code(page, form.value("email")):
        form.errors = explain(problem, page.t)
        return await login_code_page(page, form, next_page, status=400)
    page.notice("notice.login_code_sent", email=form.value("email"))
    return await page.redirect("/login/code/verify", next=next_page)


# --- forgotten password --------------------------------------------------------------------


@router.get("/password/forgot")
async def forgot_form(page: PageDep) -> Response:
    return await page.render("forgot.html", form=Form())


@router.post("/password/forgot")
async def forgot(page: PageDep) -> Response:
    fields = await page.form()
    form = Form({"email": email_of(fields)})
    if form.require(page.t, "email"):
        body = {"email": form.value("email"), "locale": page.t.lang}
        try:
            await page.call("auth", "POST", "/v1/auth/password/forgot", json=body)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            page.session.set("reset_email", form.value("email"))
            page.notice("notice.reset_sent", email=form.value("email"))
            return await page.redirect("/password/reset")
    return await page.render("forgot.html", status=400, form=form)


@router.get("/password/reset")
async def reset_form(page: PageDep) -> Response:
    form = Form({"email": page.session.data.get("reset_email", "")})
    return await page.render("reset.html", form=form)


@router.post("/password/reset")
async def reset(page: PageDep) -> Response:
    fields = await page.form()
    values = {
        "email": email_of(fields),
        "code": fields.get("code", "").strip(),
        "new_password": fields.get("new_password", ""),
    }
    form = Form(values)
    if form.require(page.t, *values):
        try:
            await page.call("auth", "POST", "/v1/auth/password/reset", json=values)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            page.session.pop("reset_email")
            page.notice("notice.password_reset")
            return await page.redirect("/login")
    return await page.render("reset.html", status=400, form=form)


# --- log out -------------------------------------------------------------------------------


@router.post("/logout")
async def logout(page: PageDep) -> Response:
    await page.form()
    await page.end_at_auth()  # the session ends here all the same
    await page.sign_out()
    page.notice("notice.signed_out")
    return await page.redirect("/login")
