"""The signed-in visitor's account: profile (with whether two-step sign-in is on, which
`two_step_pages` turns on and off), sessions (with "end" buttons), change password, change
email address (with the code sent to the new one) and delete the account. Each sensitive
change asks for the current password again (auth checks it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from web_service.api import ApiProblem
from web_service.forms import Form, explain
from web_service.pages import SignedInDep, path_id

router = APIRouter(prefix="/account")


@router.get("")
async def profile(page: SignedInDep) -> Response:
    me = await page.api.call("auth", "GET", "/v1/auth/me")
    page.session.set("email", me["email"])
    two_step = await page.api.call("auth", "GET", "/v1/auth/mfa")
    try:
        passkeys = (await page.api.call("auth", "GET", "/v1/auth/passkeys"))["items"]
    except ApiProblem:  # an auth from before passkeys (a rolling upgrade), or a blip
        passkeys = None  # the section is left out; the rest of the page stands
    return await page.render("account.html", me=me, two_step=two_step, passkeys=passkeys)


# --- sessions ------------------------------------------------------------------------------


@router.get("/sessions")
async def sessions(page: SignedInDep) -> Response:
    listed = await page.api.call("auth", "GET", "/v1/auth/sessions")
    return await page.render("sessions.html", sessions=listed["items"])


@router.post("/sessions/{session_id}/end")
async def end_session(page: SignedInDep, session_id: str) -> Response:
    await page.form()
    sid = path_id(session_id, "session_not_found")
    current = page.claims.get("sid") == sid
    try:
        await page.api.call("auth", "DELETE", f"/v1/auth/sessions/{sid}")
    except ApiProblem as problem:
        if problem.error != "session_not_found":
            raise
    if current:
        await page.sign_out()
        page.notice("notice.signed_out")
        return await page.redirect("/login")
    page.notice("notice.session_ended_one")
    return await page.redirect("/account/sessions")


@router.post("/sessions/end-others")
async def end_other_sessions(page: SignedInDep) -> Response:
    await page.form()
    await page.api.call("auth", "DELETE", "/v1/auth/sessions")
    page.notice("notice.other_sessions_ended")
    return await page.redirect("/account/sessions")


# --- password ------------------------------------------------------------------------------


@router.get("/password")
async def password_form(page: SignedInDep) -> Response:
    return await page.render("change_password.html", form=Form())


@router.post("/password")
async def change_password(page: SignedInDep) -> Response:
    fields = await page.form()
    values = {k: fields.get(k, "") for k in ("current_password", "new_password")}
    form = Form(values)
    if form.require(page.t, *values):
        body = values | {"locale": page.t.lang}
        try:
            await page.api.call("auth", "POST", "/v1/auth/password/change", json=body)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t, {"password": "current_password"})
        else:
            page.notice("notice.password_changed")
            return await page.redirect("/account")
    return await page.render("change_password.html", status=400, form=form)


# --- email address -------------------------------------------------------------------------


@router.get("/email")
async def email_form(page: SignedInDep) -> Response:
    return await page.render("change_email.html", form=Form())


@router.post("/email")
async def change_email(page: SignedInDep) -> Response:
    fields = await page.form()
    form = Form(
        {"new_email": fields.get("new_email", "").strip(), "password": fields.get("password", "")}
    )
    if form.require(page.t, "new_email", "password"):
        body = form.values | {"locale": page.t.lang}
        try:
            await page.api.call("auth", "POST", "/v1/auth/email/change", json=body)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            page.session.set("new_email", form.value("new_email"))
            page.notice("notice.email_code_sent", email=form.value("new_email"))
            return await page.redirect("/account/email/confirm")
    return await page.render("change_email.html", status=400, form=form)


@router.get("/email/confirm")
async def confirm_email_form(page: SignedInDep) -> Response:
    return await page.render(
        "confirm_email.html", form=Form(), new_email=page.session.data.get("new_email", "")
    )


@router.post("/email/confirm")
async def confirm_email(page: SignedInDep) -> Response:
    fields = await page.form()
    form = Form({"code": fields.get("code", "").strip()})
    if form.require(page.t, "code"):
        body = form.values | {"locale": page.t.lang}
        try:
            await page.api.call_replacing_tokens(
                "auth", "POST", "/v1/auth/email/change/confirm", json=body
            )
        except ApiProblem as problem:
            form.errors = explain(problem, page.t, {"new_email": ""})
        else:
            page.session.set("email", page.session.pop("new_email", ""))
            page.notice("notice.email_changed")
            return await page.redirect("/account")
    new_email = page.session.data.get("new_email", "")
    return await page.render("confirm_email.html", status=400, form=form, new_email=new_email)


# --- delete --------------------------------------------------------------------------------


@router.get("/delete")
async def delete_form(page: SignedInDep) -> Response:
    return await page.render("delete_account.html", form=Form())


@router.post("/delete")
async def delete_account(page: SignedInDep) -> Response:
    fields = await page.form()
    form = Form({"password": fields.get("password", "")})
    if form.require(page.t, "password"):
        try:
            await page.api.call("auth", "DELETE", "/v1/auth/me", json=form.values)
        except ApiProblem as problem:
            form.errors = explain(problem, page.t)
        else:
            await page.sign_out()
            page.notice("notice.account_deleted")
            return await page.redirect("/")
    return await page.render("delete_account.html", status=400, form=form)
