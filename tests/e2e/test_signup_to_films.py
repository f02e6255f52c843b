"""The whole path on real parts: HTTP → auth → outbox → Kafka → mailer → SMTP → verify →
login → films, with every service a separate process."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.support import unique_email

pytestmark = pytest.mark.e2e


def test_signup_email_verify_login_films(stack: Stack) -> None:
    email = unique_email("e2e")
    password = "correct horse battery staple"
    with stack.http() as http:
        r = http.post(
            f"{stack.auth.url}/v1/auth/signup",
            json={"email": email.upper(), "password": password},
        )
        assert r.status_code == 202, r.text

        [mail] = stack.smtp.wait_for(email)
        assert mail.message["Subject"] == "Your Films verification code"
        code = mail.code
        assert code is not None and len(code) == 6 and code.isdigit()
        assert mail.message.get_body(("html",)) is not None

        # Not verified yet: the right password still may not log in.
        r = http.post(
            f"{stack.auth.url}/v1/auth/login", json={"email": email, "password": password}
        )
        assert r.status_code == 403
        assert r.json()["error"] == "email_not_verified"

        r = http.post(f"{stack.auth.url}/v1/auth/verify", json={"email": email, "code": code})
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "Bearer"

        r = http.post(
            f"{stack.auth.url}/v1/auth/login", json={"email": email, "password": password}
        )
        assert r.status_code == 200, r.text
        pair = r.json()
        assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert pair["expires_in"] == 900
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}

        me = http.get(f"{stack.auth.url}/v1/auth/me", headers=bearer).json()
        assert me["email"] == email
        assert me["email_verified"] is True
        assert me["roles"] == []

        page = http.get(f"{stack.films.url}/v1/films", params={"limit": 5}, headers=bearer)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["total"] >= 50
        assert len(body["items"]) == 5
        film_id = body["items"][0]["id"]

        one = http.get(f"{stack.films.url}/v1/films/{film_id}", headers=bearer)
        assert one.status_code == 200
        assert one.json() == body["items"][0]

        # Films needs the token: without it, 401 per RFC 6750.
        r = http.get(f"{stack.films.url}/v1/films")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_all_services_ready(stack: Stack) -> None:
    with stack.http() as http:
        for service in (stack.auth, stack.films, stack.mailer):
            r = http.get(f"{service.url}/readyz")
            assert r.status_code == 200, (service.module, r.text)
            assert r.json()["status"] == "ready"
            assert http.get(f"{service.url}/metrics").status_code == 200
