"""The admin API on the real stack: only for accounts the database says are admins; search
and pagination; disabling ends every session and blocks login and refresh; roles; no
self-lockout; every change audited with the acting admin."""

from __future__ import annotations

import json
import sqlite3
import uuid

import httpx
import pytest

from tests.accounts import (
    PASSWORD,
    Account,
    audit_rows,
    cooled_down_account,
    login,
    new_account,
    new_admin,
)
from tests.conftest import Stack
from tests.integration.test_auth_api import signup
from tests.integration.test_keys_and_roles import run_cli
from tests.support import unique_email


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Account:
    with httpx.Client(timeout=30) as http:
        return new_admin(stack, http)


def patch(http: httpx.Client, admin: Account, user_id: str, **body: object) -> httpx.Response:
    return http.patch(f"/v1/admin/users/{user_id}", json=body, headers=admin.bearer)


def test_user_tokens_are_refused(stack: Stack, http: httpx.Client) -> None:
    user = new_account(stack, http, "not-admin")
    for method, path in [
        ("GET", "/v1/admin/users"),
        ("GET", f"/v1/admin/users/{user.id}"),
        ("PATCH", f"/v1/admin/users/{user.id}"),
    ]:
        r = http.request(method, path, json={"roles": ["admin"]}, headers=user.bearer)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden"
        assert http.request(method, path, json={"disabled": True}).status_code == 401
    assert http.get("/v1/auth/me", headers=user.bearer).json()["roles"] == []


def test_the_role_is_read_from_the_database(stack: Stack, http: httpx.Client) -> None:
    former = new_admin(stack, http)
    assert http.get("/v1/admin/users", headers=former.bearer).status_code == 200
    done = run_cli(stack.auth.env, "roles", "revoke", former.email, "admin")
    assert done.returncode == 0, done.stderr
    # The token still says admin for its lifetime; auth asks the database.
    assert "admin" in former.claims["roles"]
    assert http.get("/v1/admin/users", headers=former.bearer).status_code == 403


def test_search_and_pagination(stack: Stack, http: httpx.Client, admin: Account) -> None:
    tag = f"page{uuid.uuid4().hex[:6]}"
    emails = sorted(signup_only(stack, http, f"{tag}-{i}") for i in range(3))
    page = http.get(
        "/v1/admin/users", params={"q": tag.upper(), "limit": 2}, headers=admin.bearer
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    rest = http.get(
        "/v1/admin/users", params={"q": tag, "limit": 2, "offset": 2}, headers=admin.bearer
    ).json()
    assert sorted(u["email"] for u in page["items"] + rest["items"]) == emails
    item = page["items"][0]
    assert set(item) == {
        "id", "email", "email_verified", "roles", "created_at", "disabled", "disabled_at", "mfa",
        "passkeys",
    }  # fmt: skip
    assert item["email_verified"] is False and item["disabled"] is False
    assert item["passkeys"] == 0
    one = http.get(f"/v1/admin/users/{item['id']}", headers=admin.bearer)
    assert one.json() == item
    wildcard = http.get("/v1/admin/users", params={"q": "%"}, headers=admin.bearer).json()
    assert wildcard["total"] == 0  # taken literally


def signup_only(stack: Stack, http: httpx.Client, tag: str) -> str:
    email = unique_email(tag)
    signup(stack, http, email)
    return email


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "q=", "q=%00", "limit=abc"])
def test_bad_queries_are_422(http: httpx.Client, admin: Account, query: str) -> None:
    r = http.get(f"/v1/admin/users?{query}", headers=admin.bearer)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request"


def test_unknown_and_malformed_ids(http: httpx.Client, admin: Account) -> None:
    missing = http.get(f"/v1/admin/users/{uuid.uuid4()}", headers=admin.bearer)
    assert (missing.status_code, missing.json()["error"]) == (404, "user_not_found")
    assert patch(http, admin, str(uuid.uuid4()), disabled=True).status_code == 404
    assert http.get("/v1/admin/users/42", headers=admin.bearer).status_code == 422


def test_disabling_ends_sessions_and_blocks_login(
    stack: Stack, http: httpx.Client, admin: Account
) -> None:
    user = cooled_down_account(stack, http, "disabled")
    other = login(stack, http, user.email)
    r = patch(http, admin, user.id, disabled=True)
    assert r.status_code == 200
    assert r.json()["disabled"] is True and r.json()["disabled_at"]

    for session in (user, other):
        again = http.post("/v1/auth/token/refresh", json={"refresh_token": session.refresh_token})
        assert again.json()["error"] == "invalid_grant"
        assert http.get("/v1/auth/me", headers=session.bearer).status_code == 401
    right = http.post("/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    assert (right.status_code, right.json()["error"]) == (403, "account_disabled")
    wrong = http.post("/v1/auth/login", json={"email": user.email, "password": "not it!"})
    assert wrong.json()["error"] == "invalid_credentials"  # says nothing without the password
    oauth = http.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": user.email, "password": PASSWORD},
    )
    assert oauth.json()["error"] == "invalid_grant"
    # No sign-in code for a disabled account either (same answer as ever).
    assert http.post("/v1/auth/login/code", json={"email": user.email}).status_code == 202

    assert patch(http, admin, user.id, disabled=False).json()["disabled"] is False
    login(stack, http, user.email)
    http.post("/v1/auth/password/forgot", json={"email": user.email})
    subjects = [m.message["Subject"] for m in stack.smtp.wait_for(user.email, count=2)]
    assert subjects[1] == "Your Films password reset code"  # not a sign-in code

    events = [(e, json.loads(d or "{}")) for e, _, d in audit_rows(stack, user.id)]
    assert ("user_disabled", {"admin": admin.id}) in events
    assert ("user_enabled", {"admin": admin.id}) in events


def test_roles_are_granted_and_revoked(stack: Stack, http: httpx.Client, admin: Account) -> None:
    user = new_account(stack, http, "editor")
    granted = patch(http, admin, user.id, roles=["editor", "admin"])
    assert granted.json()["roles"] == ["admin", "editor"]
    promoted = login(stack, http, user.email)
    assert http.get("/v1/admin/users", headers=promoted.bearer).status_code == 200
    assert patch(http, admin, user.id, roles=["editor"]).json()["roles"] == ["editor"]
    assert http.get("/v1/admin/users", headers=promoted.bearer).status_code == 403
    events = [
        (e, json.loads(d or "{}")) for e, _, d in audit_rows(stack, user.id) if e.startswith("role")
    ]
    assert events == [
        ("role_granted", {"role": "admin", "admin": admin.id}),
        ("role_granted", {"role": "editor", "admin": admin.id}),
        ("role_revoked", {"role": "admin", "admin": admin.id}),
    ]


def test_an_admin_cannot_lock_themselves_out(http: httpx.Client, admin: Account) -> None:
    bodies: list[dict[str, object]] = [{"disabled": True}, {"roles": []}, {"roles": ["editor"]}]
    for body in bodies:
        r = patch(http, admin, admin.id, **body)
        assert r.status_code == 409, body
        assert r.json()["error"] == "admin_self_lockout"
    assert patch(http, admin, admin.id, roles=["admin", "editor"]).status_code == 200
    assert patch(http, admin, admin.id, roles=["admin"]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"disabled": None}, {"roles": None}, {"disabled": "yes"}, {"roles": ["Not A Role"]},
     {"roles": "admin"}, {"roles": ["x"] * 21}, {"email": "a@example.com"}],
)  # fmt: skip
def test_bad_patches_are_422(
    stack: Stack, http: httpx.Client, admin: Account, body: dict[str, object]
) -> None:
    r = http.patch(f"/v1/admin/users/{admin.id}", json=body, headers=admin.bearer)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"


def test_reads_are_audited_too(stack: Stack, http: httpx.Client, admin: Account) -> None:
    user = new_account(stack, http, "looked-at")
    http.get("/v1/admin/users", params={"q": "looked-at"}, headers=admin.bearer)
    http.get(f"/v1/admin/users/{user.id}", headers=admin.bearer)
    reads = [json.loads(d or "{}") for e, _, d in audit_rows(stack, user.id) if e == "user_read"]
    assert reads == [{"admin": admin.id}]
    with sqlite3.connect(stack.work / "auth.db") as db:
        searches = db.execute(
            "SELECT detail FROM audit_events WHERE event = 'users_listed' ORDER BY id DESC"
        ).fetchall()
    assert {"admin": admin.id, "q": "looked-at"} in [json.loads(d) for (d,) in searches]


def test_admins_read_the_untold_logout_notices_and_retry_them(
    stack: Stack, http: httpx.Client, admin: Account
) -> None:
    """Over HTTP, with the rules of every admin route, a notice given up on as the
    delivery leaves it (how a retry runs is tests/unit/test_backchannel.py's: the test
    stack's applications listen nowhere, so a retry here has none to try)."""
    user = new_account(stack, http, "not-admin-notices")
    notices = "/v1/admin/logout-notices"
    for method, path in [("GET", notices), ("POST", f"{notices}/retry")]:
        assert http.request(method, path).status_code == 401
        assert http.request(method, path, headers=user.bearer).status_code == 403
    session_id = uuid.uuid4()
    with sqlite3.connect(stack.work / "auth.db") as db:
        db.execute(
            "INSERT INTO logout_notices (session_id, client_id, user_id, created_at, attempts,"
            " next_attempt_at, failed_at, error) VALUES (?, 'test-spa', ?,"
            " '2026-01-01 00:00:00.000000', 6, '2026-01-01 01:00:00.000000',"
            " '2026-01-01 01:00:00.000000', 'HTTP 503')",
            (session_id.hex, uuid.UUID(user.id).hex),
        )
    try:
        page = http.get(notices, params={"failed": "true"}, headers=admin.bearer)
        assert page.status_code == 200, page.text
        (item,) = [i for i in page.json()["items"] if i["session_id"] == str(session_id)]
        assert item["client_id"] == "test-spa" and item["user_id"] == user.id
        assert item["attempts"] == 6 and item["error"] == "HTTP 503" and item["failed_at"]
        still = http.get(notices, params={"failed": "false", "client_id": "test-spa"},
                         headers=admin.bearer)  # fmt: skip
        assert still.json()["total"] == 0
        elsewhere = http.get(notices, params={"client_id": "test-server"}, headers=admin.bearer)
        assert elsewhere.json()["items"] == []
        named = http.post(f"{notices}/retry", json={"client_id": "test-spa"}, headers=admin.bearer)
        assert named.status_code == 404 and named.json()["error"] == "client_not_listening"
        everyone = http.post(f"{notices}/retry", headers=admin.bearer)  # no body: all listening
        assert everyone.status_code == 200 and everyone.json() == {"retried": 0}
    finally:
        with sqlite3.connect(stack.work / "auth.db") as db:
            db.execute("DELETE FROM logout_notices WHERE session_id = ?", (session_id.hex,))
            listed = db.execute(
                "SELECT count(*) FROM audit_events WHERE event = 'logout_notices_listed'"
                " AND detail LIKE ?",
                (f'%"{admin.id}"%',),
            ).fetchone()
    assert listed[0] >= 3
    for bad in ({"limit": 0}, {"failed": "maybe"}, {"client_id": "x" * 129},
                {"client_id": "a\x00b"}):  # fmt: skip
        assert http.get(notices, params=bad, headers=admin.bearer).status_code == 422, bad
    for body in ({"everything": True}, {"client_id": "a\u0000b"}, {"client_id": 7}):
        r = http.post(f"{notices}/retry", json=body, headers=admin.bearer)
        assert r.status_code == 422, body
