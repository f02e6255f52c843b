"""Passkeys on the real stack: a software authenticator (tests/passkey_device.py) answers
auth's options as a browser would; the answers are checked by auth over HTTP, the notice
reaches the real SMTP server."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import jwt

from tests.accounts import PASSWORD, Account, audit_rows, auth_rows, new_account, new_admin
from tests.conftest import Stack
from tests.integration.test_two_step import mfa_token, second_step, turn_on
from tests.passkey_device import Device, b64url, from_b64url


def add_options(http: httpx.Client, account: Account) -> dict[str, Any]:
    r = http.post("/v1/auth/passkeys/options", json={"password": PASSWORD}, headers=account.bearer)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json()["publicKey"])


def add(
    http: httpx.Client, account: Account, credential: dict[str, Any], **extra: Any
) -> httpx.Response:
    body = {"credential": credential, **extra}
    return http.post("/v1/auth/passkeys", json=body, headers=account.bearer)


def with_passkey(http: httpx.Client, account: Account, device: Device) -> str:
    r = add(http, account, device.create(add_options(http, account)), name="laptop")
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def login_options(http: httpx.Client) -> dict[str, Any]:
    r = http.post("/v1/auth/login/passkey/options")
    assert r.status_code == 200, r.text
    return dict(r.json()["publicKey"])


def passkey_login(http: httpx.Client, credential: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/auth/login/passkey", json={"credential": credential})


def error(response: httpx.Response) -> str:
    return str(response.json()["error"])


def test_adding_a_passkey_then_signing_in_with_it(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "passkey")
    assert http.get("/v1/auth/passkeys", headers=account.bearer).json() == {"items": []}
    wrong = http.post(
        "/v1/auth/passkeys/options", json={"password": "not it at all"}, headers=account.bearer
    )
    assert (wrong.status_code, error(wrong)) == (400, "invalid_password")

    options = add_options(http, account)
    assert options["rp"]["id"] == "localhost"
    assert options["user"]["name"] == account.email
    assert from_b64url(options["user"]["id"]).hex() == account.id.replace("-", "")
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    device = Device()
    added = add(http, account, device.create(options), name="  my phone ", locale="ru")
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "my phone"
    assert added.json()["backed_up"] is True
    assert added.json()["last_used_at"] is None
    notice = stack.smtp.wait_for(account.email, count=2)[1]
    assert "ключ доступа" in str(notice.message["subject"])
    assert notice.code is None

    # A second one from the same device is refused by the device itself: auth names the first.
    again = add_options(http, account)
    assert [c["id"] for c in again["excludeCredentials"]] == [b64url(c) for c in device.keys]

    # Signing in: the options name no account and no passkey.
    options = login_options(http)
    assert options["rpId"] == "localhost"
    assert options["userVerification"] == "required"
    assert options.get("allowCredentials", []) == []
    signed_in = passkey_login(http, device.get(options))
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.headers["cache-control"] == "no-store"
    token = signed_in.json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == account.id
    assert claims["amr"] == ["pop", "mfa"]
    me = http.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["email"] == account.email
    # The session refreshes like any other, and keeps how it was signed in.
    refreshed = http.post(
        "/v1/auth/token/refresh", json={"refresh_token": signed_in.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    claims = jwt.decode(refreshed.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pop", "mfa"]

    listed = http.get("/v1/auth/passkeys", headers=account.bearer).json()["items"]
    assert [(p["id"], p["name"]) for p in listed] == [(added.json()["id"], "my phone")]
    assert listed[0]["last_used_at"] is not None
    events = [
        (event, json.loads(detail or "{}")) for event, _, detail in audit_rows(stack, account.id)
    ]
    assert ("passkey_added", {"passkey": added.json()["id"]}) in events
    assert ("login_ok", {"method": "passkey", "passkey": added.json()["id"]}) in events
    # What is kept is the public key and its id, nothing secret; of the challenges, only
    # the one handed out and not answered ("again", above).
    (public_key,) = auth_rows(
        stack, "SELECT public_key FROM passkeys WHERE user_id = ?", account.id.replace("-", "")
    )[0]
    assert len(public_key) < 100
    assert auth_rows(
        stack,
        "SELECT count(*) FROM passkey_challenges WHERE user_id = ?",
        account.id.replace("-", ""),
    ) == [(1,)]


def test_a_challenge_is_used_once(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "passkey-once")
    device = Device()
    options = add_options(http, account)
    answer = device.create(options)
    assert add(http, account, answer).status_code == 201
    replayed = add(http, account, answer)
    assert (replayed.status_code, error(replayed)) == (400, "invalid_passkey")
    # Asking again replaces the options not yet answered.
    stale = Device().create(add_options(http, account))
    fresh = Device().create(add_options(http, account))
    assert error(add(http, account, stale)) == "invalid_passkey"
    assert add(http, account, fresh).status_code == 201

    # The same passkey for another account (a device that does not keep to the rules).
    other = new_account(stack, http, "passkey-twice")
    (taken,) = device.keys
    twice = add(http, other, Device().create(add_options(http, other), credential_id=taken))
    assert (twice.status_code, error(twice)) == (409, "passkey_exists")

    answer = device.get(login_options(http))
    assert passkey_login(http, answer).status_code == 200
    replayed = passkey_login(http, answer)
    assert (replayed.status_code, error(replayed)) == (401, "passkey_not_accepted")


def test_answers_for_another_site_or_account_are_refused(stack: Stack, http: httpx.Client) -> None:
    account, other = new_account(stack, http, "passkey-site"), new_account(stack, http, "pk-other")
    # A page on another origin (a phishing site relaying auth's options) gets nothing.
    phished = Device(origin="https://login.example.net")
    refused = add(http, account, phished.create(add_options(http, account)))
    assert (refused.status_code, error(refused)) == (400, "invalid_passkey")
    # Nor does a passkey made for another relying party.
    options = add_options(http, account)
    options["rp"]["id"] = "example.com"
    refused = add(http, account, Device().create(options))
    assert error(refused) == "invalid_passkey"
    # A challenge handed to another account does not add a passkey to this one.
    refused = add(http, account, Device().create(add_options(http, other)))
    assert error(refused) == "invalid_passkey"
    # An authenticator that did not verify its user (no PIN, no fingerprint) is not enough.
    refused = add(http, account, Device(verifies_user=False).create(add_options(http, account)))
    assert error(refused) == "invalid_passkey"
    assert http.get("/v1/auth/passkeys", headers=account.bearer).json() == {"items": []}

    device = Device()
    with_passkey(http, account, device)
    key = next(iter(device.keys.values()))
    for tamper in ("origin", "signature", "user", "handle", "unknown"):
        options = login_options(http)
        if tamper == "origin":
            answer = Device(origin="https://login.example.net", keys=device.keys).get(options)
        elif tamper == "user":  # signed, but the user was not verified (no PIN, no fingerprint)
            answer = Device(verifies_user=False, keys=device.keys).get(options)
        else:
            answer = device.get(options)
        response = answer["response"]
        if tamper == "signature":
            signature = bytearray(from_b64url(response["signature"]))
            signature[-1] ^= 1
            response["signature"] = b64url(bytes(signature))
        elif tamper == "handle":
            response["userHandle"] = b64url(bytes(16))
        elif tamper == "unknown":
            answer["id"] = answer["rawId"] = b64url(b"never registered")
        r = passkey_login(http, answer)
        assert (r.status_code, error(r)) == (401, "passkey_not_accepted"), tamper
    assert passkey_login(http, device.get(login_options(http))).status_code == 200
    assert key.credential_id in device.keys


def test_a_copied_authenticator_is_refused(stack: Stack, http: httpx.Client) -> None:
    """An authenticator with a signature counter that goes back (a clone's) is refused."""
    account = new_account(stack, http, "passkey-clone")
    device = Device(counting=True)
    with_passkey(http, account, device)
    clone = Device(counting=True, keys=copy.deepcopy(device.keys))
    assert passkey_login(http, device.get(login_options(http))).status_code == 200
    assert passkey_login(http, device.get(login_options(http))).status_code == 200
    copied = passkey_login(http, clone.get(login_options(http)))
    assert (copied.status_code, error(copied)) == (401, "passkey_not_accepted")


def test_removing_disabling_and_deleting(stack: Stack, http: httpx.Client) -> None:
    account, other = new_account(stack, http, "passkey-rm"), new_account(stack, http, "pk-rm2")
    laptop, phone, theirs = Device(), Device(), Device()
    first = with_passkey(http, account, laptop)
    second = with_passkey(http, account, phone)
    with_passkey(http, other, theirs)
    # Another account's passkey is not yours to remove; nor is an unknown id.
    gone = http.delete(f"/v1/auth/passkeys/{first}", headers=other.bearer)
    assert (gone.status_code, error(gone)) == (404, "passkey_not_found")
    assert http.delete("/v1/auth/passkeys/not-an-id", headers=account.bearer).status_code == 422
    mails = len(stack.smtp.wait_for(account.email, count=3))  # the code and two notices
    assert http.delete(f"/v1/auth/passkeys/{first}", headers=account.bearer).status_code == 204
    assert http.delete(f"/v1/auth/passkeys/{first}", headers=account.bearer).status_code == 404
    # The owner hears of it: a session that removes a way in may not be theirs.
    notice = stack.smtp.wait_for(account.email, count=mails + 1)[-1]
    assert "removed" in str(notice.message["subject"]) and notice.code is None
    refused = passkey_login(http, laptop.get(login_options(http)))
    assert error(refused) == "passkey_not_accepted"
    left = [p["id"] for p in http.get("/v1/auth/passkeys", headers=account.bearer).json()["items"]]
    assert left == [second]
    events = [event for event, _, _ in audit_rows(stack, account.id)]
    assert events[-1] == "passkey_removed"  # the refused sign-in names no account

    # Disabled by an admin: the right passkey is told so, and gets no session.
    admin = new_admin(stack, http)
    patch = http.patch(
        f"/v1/admin/users/{account.id}", json={"disabled": True}, headers=admin.bearer
    )
    assert patch.status_code == 200, patch.text
    r = passkey_login(http, phone.get(login_options(http)))
    assert (r.status_code, error(r)) == (403, "account_disabled")

    # A deleted account's passkeys go with it.
    deleted = http.request(
        "DELETE", "/v1/auth/me", json={"password": PASSWORD}, headers=other.bearer
    )
    assert deleted.status_code == 204, deleted.text
    assert auth_rows(
        stack, "SELECT count(*) FROM passkeys WHERE user_id = ?", other.id.replace("-", "")
    ) == [(0,)]
    r = passkey_login(http, theirs.get(login_options(http)))
    assert error(r) == "passkey_not_accepted"


def test_a_passkey_is_both_steps_of_two_step_sign_in(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "passkey-mfa")
    device = Device()
    with_passkey(http, account, device)
    options = add_options(http, account)  # answered after the app is on
    app, _ = turn_on(http, account)
    mfa_token(http, account)  # the password alone now asks for the app
    r = passkey_login(http, device.get(login_options(http)))
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert "mfa" in claims["amr"]

    # A passkey would be a second step for good: only a session that passed the app's
    # may add one. This one was opened by the emailed code alone.
    refused = http.post(
        "/v1/auth/passkeys/options", json={"password": PASSWORD}, headers=account.bearer
    )
    assert (refused.status_code, error(refused)) == (403, "mfa_session_required")
    late = add(http, account, Device().create(options))
    assert (late.status_code, error(late)) == (403, "mfa_session_required")
    done = second_step(http, mfa_token(http, account), app.code())
    assert done.status_code == 200, done.text
    two_step = Account(account.email, PASSWORD, done.json()["access_token"], "")
    with_passkey(http, two_step, Device())


def test_a_new_password_drops_options_not_yet_answered(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "passkey-pw")
    options = add_options(http, account)
    changed = http.post(
        "/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "another fine passphrase"},
        headers=account.bearer,
    )
    assert changed.status_code == 204, changed.text
    refused = add(http, account, Device().create(options))
    assert (refused.status_code, error(refused)) == (400, "invalid_passkey")


def test_malformed_answers_are_refused_plainly(stack: Stack, http: httpx.Client) -> None:
    account = new_account(stack, http, "passkey-bad")
    device = Device()
    with_passkey(http, account, device)
    real_login = device.get(login_options(http))
    real_add = Device().create(add_options(http, account))
    broken_attestation = copy.deepcopy(real_add)
    broken_attestation["response"]["attestationObject"] = b64url(b"\xa1\x63fmt")
    broken_data = copy.deepcopy(real_login)
    broken_data["response"]["authenticatorData"] = b64url(b"short")
    answers: list[dict[str, Any]] = [
        {},
        {"response": "x"},
        {"id": "!!", "response": {"clientDataJSON": "%%%"}},
        {"id": "AAAA", "response": {"clientDataJSON": b64url(b"[1, 2]")}},
        {"id": "AAAA", "response": {"clientDataJSON": b64url(b'{"challenge": 5}')}},
        {"id": 5, "response": {"clientDataJSON": b64url(b'{"challenge": "AAAA"}')}},
        broken_data,
        # Nested deeper than the JSON parser goes.
        {"id": "AAAA", "response": {"clientDataJSON": b64url(b"[" * 2900)}},
    ]
    for credential in answers:
        r = passkey_login(http, credential)
        assert (r.status_code, error(r)) == (401, "passkey_not_accepted"), credential
    deep = {"response": {"clientDataJSON": b64url(b"[" * 2900)}}
    for credential in [broken_attestation, {}, {"response": [1]}, deep]:
        r = add(http, account, credential)
        assert (r.status_code, error(r)) == (400, "invalid_passkey"), credential
    # An id over WebAuthn's 1,023 bytes (PostgreSQL's column would refuse it with a 500).
    too_long = Device().create(add_options(http, account), credential_id=bytes(1024))
    r = add(http, account, too_long)
    assert (r.status_code, error(r)) == (400, "invalid_passkey")
    assert passkey_login(http, device.get(login_options(http))).status_code == 200


def test_an_admin_removes_every_passkey_of_an_account(stack: Stack, http: httpx.Client) -> None:
    """For a device lost or stolen: the admin API shows how many an account has and removes
    them all, with options handed out to add one; the owner is told, the password still
    works, and a user cannot do it to another."""
    account = new_account(stack, http, "passkey-lost")
    laptop, phone = Device(), Device()
    with_passkey(http, account, laptop)
    with_passkey(http, account, phone)
    pending = Device().create(add_options(http, account))  # options for a third, unused
    admin = new_admin(stack, http)
    path = f"/v1/admin/users/{account.id}"
    assert http.get(path, headers=admin.bearer).json()["passkeys"] == 2
    listed = http.get("/v1/admin/users", params={"q": account.email}, headers=admin.bearer)
    assert [u["passkeys"] for u in listed.json()["items"]] == [2]

    assert http.delete(f"{path}/passkeys", headers=account.bearer).status_code == 403
    mails = len(stack.smtp.wait_for(account.email, count=3))  # the code and two notices
    removed = http.delete(f"{path}/passkeys", headers=admin.bearer)
    assert removed.status_code == 200, removed.text
    assert removed.json()["passkeys"] == 0 and removed.json()["email"] == account.email
    notice = stack.smtp.wait_for(account.email, count=mails + 1)[-1]
    assert "passkeys" in str(notice.message["subject"]).lower() and notice.code is None

    for device in (laptop, phone):
        refused = passkey_login(http, device.get(login_options(http)))
        assert error(refused) == "passkey_not_accepted"
    assert error(add(http, account, pending)) == "invalid_passkey"  # its options went too
    assert http.get("/v1/auth/passkeys", headers=account.bearer).json() == {"items": []}
    password = http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
    assert password.status_code == 200, password.text

    # Nothing left to remove: the same answer, audited too; the notice goes only with a
    # removal (admin_users.remove_passkeys).
    again = http.delete(f"{path}/passkeys", headers=admin.bearer)
    assert again.status_code == 200 and again.json()["passkeys"] == 0
    rows = [d for event, _, d in audit_rows(stack, account.id) if event == "passkeys_removed"]
    assert [json.loads(row) for row in rows] == [
        {"admin": admin.id, "count": 2},
        {"admin": admin.id, "count": 0},
    ]
    unknown = http.delete(
        "/v1/admin/users/00000000-0000-0000-0000-000000000000/passkeys", headers=admin.bearer
    )
    assert (unknown.status_code, error(unknown)) == (404, "user_not_found")
    assert (
        http.delete("/v1/admin/users/not-an-id/passkeys", headers=admin.bearer).status_code == 422
    )
