"""Sessions on the real stack: tokens carry `sid`; a user lists their sessions, ends one or
all but the current one; an ended session's refresh token is refused at once; another
user's session id is answered as if it did not exist."""

from __future__ import annotations

import uuid

import httpx

from tests.accounts import Account, login, new_account
from tests.conftest import Stack
from tests.support import Minter


def sessions(http: httpx.Client, account: Account) -> list[dict[str, object]]:
    r = http.get("/v1/auth/sessions", headers=account.bearer)
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


def refresh(http: httpx.Client, account: Account) -> httpx.Response:
    return http.post("/v1/auth/token/refresh", json={"refresh_token": account.refresh_token})


def end(http: httpx.Client, account: Account, session_id: str) -> httpx.Response:
    return http.delete(f"/v1/auth/sessions/{session_id}", headers=account.bearer)


def test_sessions_are_listed_with_where_they_came_from(stack: Stack, http: httpx.Client) -> None:
    first = new_account(stack, http, "lister")
    r = http.post(
        "/v1/auth/login",
        json={"email": first.email, "password": first.password},
        headers={"User-Agent": "FilmsApp/2.1 (Android)"},
    )
    phone = Account(
        first.email, first.password, r.json()["access_token"], r.json()["refresh_token"]
    )
    listed = sessions(http, first)
    assert {s["id"] for s in listed} == {first.sid, phone.sid}
    by_id = {s["id"]: s for s in listed}
    assert by_id[first.sid]["current"] is True
    assert by_id[phone.sid]["current"] is False
    assert by_id[phone.sid]["user_agent"] == "FilmsApp/2.1 (Android)"
    assert by_id[phone.sid]["ip"] == "127.0.0.1"
    assert listed[0]["id"] == phone.sid  # most recently used first
    assert set(listed[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "ip",
        "user_agent",
        "current",
        "client_id",
        "application",
    }
    assert listed[0]["client_id"] is None and listed[0]["application"] is None  # a login's

    # A refresh keeps the session and marks it used.
    rotated = refresh(http, first).json()
    renewed = Account(
        first.email, first.password, rotated["access_token"], rotated["refresh_token"]
    )
    assert renewed.sid == first.sid
    assert sessions(http, renewed)[0]["id"] == first.sid


def test_an_ended_session_is_refused_at_once(stack: Stack, http: httpx.Client) -> None:
    here = new_account(stack, http, "ender")
    there = login(stack, http, here.email)
    assert end(http, here, there.sid).status_code == 204
    assert refresh(http, there).json()["error"] == "invalid_grant"
    assert http.get("/v1/auth/me", headers=there.bearer).status_code == 401
    assert [s["id"] for s in sessions(http, here)] == [here.sid]
    assert end(http, here, there.sid).status_code == 204  # ending it again changes nothing


def test_ending_the_current_session_logs_out(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "self-ender")
    assert end(http, account, account.sid).status_code == 204
    assert http.get("/v1/auth/me", headers=account.bearer).status_code == 401
    assert refresh(http, account).status_code == 401


def test_end_every_other_session(stack: Stack, http: httpx.Client) -> None:
    here = new_account(stack, http, "keeper")
    others = [login(stack, http, here.email) for _ in range(2)]
    assert http.delete("/v1/auth/sessions", headers=here.bearer).status_code == 204
    for other in others:
        assert refresh(http, other).json()["error"] == "invalid_grant"
    assert [s["id"] for s in sessions(http, here)] == [here.sid]
    assert refresh(http, here).status_code == 200


def test_logout_ends_the_session(stack: Stack, http: httpx.Client) -> None:
    here = new_account(stack, http, "logout")
    there = login(stack, http, here.email)
    http.post("/v1/auth/logout", json={"refresh_token": there.refresh_token})
    assert [s["id"] for s in sessions(http, here)] == [here.sid]


def test_another_users_session_is_not_found(stack: Stack, http: httpx.Client) -> None:
    mallory = new_account(stack, http, "mallory")
    alice = new_account(stack, http, "alice")
    for session_id in (alice.sid, str(uuid.uuid4())):  # someone else's, and nobody's
        r = end(http, mallory, session_id)
        assert r.status_code == 404
        assert r.json()["error"] == "session_not_found"
    assert refresh(http, alice).status_code == 200  # untouched
    assert end(http, mallory, "not-a-uuid").status_code == 422
    assert http.delete(f"/v1/auth/sessions/{alice.sid}").status_code == 401


def test_a_token_without_a_session_is_refused(stack: Stack, http: httpx.Client) -> None:
    """Signed with the real key and naming a real account, but no `sid`: refused by auth's
    own Bearer routes (films, checking offline, still accepts it)."""
    account = new_account(stack, http, "sessionless")
    token = Minter(stack.key_dir).token(sub=account.id)
    r = http.get("/v1/auth/sessions", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
