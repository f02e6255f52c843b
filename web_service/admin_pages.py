"""For admins: find users, disable or enable them, set their roles, turn their two-step
sign-in off, remove their passkeys; and an address's email delivery history (from the
mailer). The APIs check the admin role themselves; these pages
are only shown to tokens that carry it."""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from web_service.api import ApiProblem
from web_service.forms import Form, explain, whole_number
from web_service.pages import AdminDep, Page, path_id

router = APIRouter(prefix="/admin")

PAGE_SIZE = 20
ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def user_path(user_id: str) -> str:
    return f"/v1/admin/users/{path_id(user_id, 'user_not_found')}"


@router.get("/users")
async def users(page: AdminDep, q: str = "", p: str = "1") -> Response:
    q = "".join(c for c in q if c.isprintable()).strip()[:254]  # auth refuses NUL & co.
    number = whole_number(p, 1, 10_000) or 1
    params: dict[str, Any] = {"limit": PAGE_SIZE, "offset": (number - 1) * PAGE_SIZE}
    if q:
        params["q"] = q
    try:
        result = await page.api.call("auth", "GET", "/v1/admin/users", params=params)
    except ApiProblem as problem:
        if problem.status != 422:
            raise
        result = {"items": [], "total": 0}  # a search auth cannot run finds no one
    pages = max(1, math.ceil(result["total"] / PAGE_SIZE))
    return await page.render(
        "admin_users.html",
        users=result["items"],
        total=result["total"],
        q=q,
        number=min(number, pages),
        pages=pages,
    )


async def user_page(
    page: Page, user_id: str, form: Form | None = None, status: int = 200
) -> Response:
    user = await page.api.call("auth", "GET", user_path(user_id))
    form = form or Form({"roles": ", ".join(user["roles"])})
    return await page.render("admin_user.html", status=status, user=user, form=form)


@router.get("/users/{user_id}")
async def user(page: AdminDep, user_id: str) -> Response:
    return await user_page(page, user_id)


async def act(
    page: Page, user_id: str, notice: str, method: str, path: str, body: Any = None
) -> Response:
    """One change to the account through auth, then its page again: with `notice` once
    done, or the refusal in words."""
    try:
        await page.api.call("auth", method, path, json=body)
    except ApiProblem as problem:
        if problem.status in (401, 403, 503):
            raise
        return await user_page(page, user_id, Form(errors=explain(problem, page.t)), 400)
    page.notice(notice)
    return await page.redirect(f"/admin/users/{user_id}")


@router.post("/users/{user_id}/status")
async def set_status(page: AdminDep, user_id: str) -> Response:
    fields = await page.form()
    disabled = fields.get("action") == "disable"
    notice = "notice.user_disabled" if disabled else "notice.user_enabled"
    return await act(page, user_id, notice, "PATCH", user_path(user_id), {"disabled": disabled})


@router.post("/users/{user_id}/two-step-off")
async def turn_off_two_step(page: AdminDep, user_id: str) -> Response:
    """For an owner who lost both the app and the recovery codes; auth emails them."""
    await page.form()  # the CSRF check
    path = user_path(user_id)
    return await act(page, user_id, "notice.user_two_step_off", "PATCH", path, {"mfa": False})


@router.post("/users/{user_id}/passkeys/remove")
async def remove_passkeys(page: AdminDep, user_id: str) -> Response:
    """For a device lost or stolen; auth emails the owner."""
    await page.form()  # the CSRF check
    path = f"{user_path(user_id)}/passkeys"
    return await act(page, user_id, "notice.user_passkeys_removed", "DELETE", path)


@router.post("/users/{user_id}/roles")
async def set_roles(page: AdminDep, user_id: str) -> Response:
    fields = await page.form()
    typed = fields.get("roles", "")
    form = Form({"roles": typed})
    roles = sorted({r for r in re.split(r"[\s,]+", typed.strip().lower()) if r})
    if bad := [r for r in roles if not ROLE.match(r)]:
        form.errors["roles"] = page.t("error.role", role=bad[0])
    elif len(roles) > 20:
        form.errors["roles"] = page.t("error.too_many_roles")
    else:
        try:
            await page.api.call("auth", "PATCH", user_path(user_id), json={"roles": roles})
        except ApiProblem as problem:
            if problem.status in (401, 403, 503):
                raise
            form.errors = explain(problem, page.t)
        else:
            page.notice("notice.roles_saved")
            return await page.redirect(f"/admin/users/{user_id}")
    return await user_page(page, user_id, form, 400)


@router.get("/deliveries")
async def deliveries(page: AdminDep, email: str = "") -> Response:
    form = Form({"email": email.strip()})
    items: list[dict[str, Any]] | None = None
    if form.value("email"):
        try:
            result = await page.api.call(
                "mailer", "GET", "/v1/deliveries", params={"email": form.value("email")}
            )
            items = result["items"]
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            form.errors = explain(problem, page.t)
    status = 400 if form.errors else 200
    return await page.render("admin_deliveries.html", status=status, form=form, items=items)
