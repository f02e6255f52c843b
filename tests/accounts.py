"""Accounts for tests, made the way a person makes one: over HTTP, with codes read from the
real SMTP server; admins through the operator command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.support import ROOT, unique_email

PASSWORD = "a perfectly fine passphrase"


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def claims(self) -> dict[str, Any]:
        return jwt.decode(self.access_token, options={"verify_signature": False})

    @property
    def id(self) -> str:
        return str(self.claims["sub"])

    @property
    def sid(self) -> str:
        return str(self.claims["sid"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def code_for(stack: Stack, email: str, count: int = 1) -> str:
    """The code in the `count`-th email to `email` (waiting for it to arrive)."""
    code = stack.smtp.wait_for(email, count=count)[count - 1].code
    assert code is not None, f"email {count} to {email} has no code"
    return code


def new_account(
    stack: Stack, http: httpx.Client, tag: str = "user", auth: str | None = None
) -> Account:
    """A verified account, signed in once (the verification's session), at the stack's
    auth or at the one whose URL is `auth`."""
    email = unique_email(tag)
    url = auth or stack.auth.url
    r = http.post(f"{url}/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202, r.text
    pair = http.post(f"{url}/v1/auth/verify", json={"email": email, "code": code_for(stack, email)})
    assert pair.status_code == 200, pair.text
    return Account(email, PASSWORD, pair.json()["access_token"], pair.json()["refresh_token"])


def cooled_down_account(stack: Stack, http: httpx.Client, tag: str = "user") -> Account:
    """A verified account whose sign-up email is older than the resend cooldown, which
    every email to the address shares: the next email asked for is sent."""
    account = new_account(stack, http, tag)
    time.sleep(TEST_RESEND_COOLDOWN + 0.2)
    return account


def login(stack: Stack, http: httpx.Client, email: str, password: str = PASSWORD) -> Account:
    """Another session of the account."""
    r = http.post(f"{stack.auth.url}/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return Account(email, password, r.json()["access_token"], r.json()["refresh_token"])


def grant(stack: Stack, email: str, role: str = "admin") -> None:
    """The operator command, against the stack's auth database."""
    done = subprocess.run(
        [sys.executable, "-m", "auth_service", "roles", "grant", email, role],
        cwd=ROOT,
        env=stack.auth.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def new_admin(stack: Stack, http: httpx.Client) -> Account:
    account = new_account(stack, http, "admin")
    grant(stack, account.email)
    return login(stack, http, account.email)


def auth_rows(stack: Stack, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of a query on the stack's auth database (SQLite), read beside the service."""
    with sqlite3.connect(stack.work / "auth.db") as db:
        return db.execute(sql, params).fetchall()


def audit_rows(stack: Stack, user_id: str) -> list[tuple[Any, ...]]:
    """(event, email, detail JSON) of the account's audit rows, oldest first."""
    return auth_rows(
        stack,
        "SELECT event, email, detail FROM audit_events WHERE user_id = ? ORDER BY id",
        user_id.replace("-", ""),
    )
