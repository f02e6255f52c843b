"""OpenID Connect Back-Channel Logout: an application with a back-channel logout URI is
told, server to server, when one of its sessions ends. Against a real HTTP listener of
the application's (here), from an auth of its own whose settings name that listener; the
logout token is checked with joserfc against the published JWKS."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.accounts import PASSWORD, bearer, new_account
from tests.conftest import Stack
from tests.integration.test_oauth_code import server, signed_in
from tests.support import TEST_ISSUER, TEST_OAUTH_CLIENTS, wait_until

EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Listener:
    """The application's back-channel logout endpoint: records each post, and answers
    with the next of `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                listener.posts.append(
                    {"type": self.headers["Content-Type"], "form": parse_qs(body)}
                )
                status = listener.statuses.pop(0) if listener.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    listening = Listener()
    yield listening
    listening.close()


def test_an_application_is_told_when_its_session_ends(
    stack: Stack, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended from the person's sessions, with a first attempt refused: told again a few
    seconds later, with a logout token for that session; the notice is then gone."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    clients: list[dict[str, Any]] = json.loads(json.dumps(TEST_OAUTH_CLIENTS))  # a copy
    for client in clients:
        if client["client_id"] == "test-server":
            client["backchannel_logout_uri"] = listener.url
    auth = stack.spawn("auth_service", "auth-backchannel", AUTH_OAUTH_CLIENTS=json.dumps(clients))
    try:
        with httpx.Client(base_url=auth.url, timeout=30) as http:
            meta = http.get("/.well-known/openid-configuration").json()
            assert meta["backchannel_logout_supported"] is True
            assert meta["backchannel_logout_session_supported"] is True
            account = new_account(stack, http, "backchannel", auth=auth.url)
            with server() as app:
                app.scope = "openid"
                token = signed_in(app, http, account, meta)
            sid = jose_jwt.decode(token["id_token"], keys(http, meta)).claims["sid"]
            listener.statuses = [503]  # the application is busy at first
            ended = http.delete(f"/v1/auth/sessions/{sid}", headers=account.bearer)
            assert ended.status_code == 204
            wait_until(lambda: len(listener.posts) == 2, timeout=60)

            first, second = listener.posts
            assert first["form"]["logout_token"] != second["form"]["logout_token"]  # new jti
            assert second["type"] == "application/x-www-form-urlencoded"
            (logout_token,) = second["form"]["logout_token"]
            decoded = jose_jwt.decode(logout_token, keys(http, meta))
            assert decoded.header["typ"] == "logout+jwt"
            claims = decoded.claims
            assert claims["iss"] == TEST_ISSUER and claims["aud"] == "test-server"
            assert claims["sub"] == account.id and claims["sid"] == sid
            assert claims["events"] == {EVENT: {}}
            assert "nonce" not in claims and claims["jti"]
            # Its access token is refused too, and nothing is left to tell.
            assert (
                http.get(
                    "/v1/auth/oauth/userinfo", headers=bearer(token["access_token"])
                ).status_code
                == 401
            )
            with sqlite3.connect(stack.work / "auth-backchannel.db") as db:
                assert db.execute("SELECT count(*) FROM logout_notices").fetchone() == (0,)
            metrics = http.get("/metrics").text
            assert 'auth_backchannel_logout_total{outcome="retried"} 1.0' in metrics
            assert 'auth_backchannel_logout_total{outcome="told"} 1.0' in metrics

            # Deleting the account ends its sessions as any end does: the application hears.
            with server() as app:
                app.scope = "openid"
                again = signed_in(app, http, account, meta)
            sid = jose_jwt.decode(again["id_token"], keys(http, meta)).claims["sid"]
            gone = http.request(
                "DELETE", "/v1/auth/me", json={"password": PASSWORD}, headers=account.bearer
            )
            assert gone.status_code == 204, gone.text
            wait_until(lambda: len(listener.posts) == 3, timeout=60)
            (last,) = listener.posts[-1]["form"]["logout_token"]
            assert jose_jwt.decode(last, keys(http, meta)).claims["sid"] == sid
    finally:
        auth.stop()


def keys(http: httpx.Client, meta: dict[str, Any]) -> KeySet:
    return KeySet.import_key_set(http.get(meta["jwks_uri"]).json())
