"""A disabled or deleted account's access tokens stop working in films and the mailer,
which check tokens offline, within moments of the event on `auth.user-events`; not after
the token's last minute, as before. A films process started later refuses them too."""

from __future__ import annotations

import httpx

from tests.accounts import PASSWORD, new_account, new_admin
from tests.conftest import Stack
from tests.support import wait_until


def _status(url: str, headers: dict[str, str]) -> int:
    with httpx.Client(timeout=30) as http:
        return http.get(url, headers=headers).status_code


def test_a_disabled_accounts_tokens_are_refused_by_films_and_the_mailer(stack: Stack) -> None:
    with stack.http() as http:
        admin = new_admin(stack, http)
        user = new_account(stack, http, "to-disable")
        other_admin = new_admin(stack, http)
        film = f"{stack.films.url}/v1/films/1"
        deliveries = f"{stack.mailer.url}/v1/deliveries?email={user.email}"
        assert _status(film, user.bearer) == 200
        assert _status(deliveries, other_admin.bearer) == 200
        for account in (user, other_admin):
            r = http.patch(
                f"{stack.auth.url}/v1/admin/users/{account.id}",
                json={"disabled": True},
                headers=admin.bearer,
            )
            assert r.status_code == 200, r.text
        wait_until(lambda: _status(film, user.bearer) == 401)
        wait_until(lambda: _status(deliveries, other_admin.bearer) == 401)
        assert _status(film, admin.bearer) == 200  # nobody else's
        late = stack.spawn("films_service", "films-late")
        try:  # it read the topic back from before it started
            wait_until(lambda: _status(f"{late.url}/v1/films/1", user.bearer) == 401)
            assert _status(f"{late.url}/v1/films/1", admin.bearer) == 200
        finally:
            late.stop()


def test_a_deleted_accounts_token_is_refused_by_films(stack: Stack) -> None:
    with stack.http() as http:
        user = new_account(stack, http, "to-delete")
        film = f"{stack.films.url}/v1/films/1"
        assert _status(film, user.bearer) == 200
        r = http.request(
            "DELETE",
            f"{stack.auth.url}/v1/auth/me",
            json={"password": PASSWORD},
            headers=user.bearer,
        )
        assert r.status_code == 204, r.text
        wait_until(lambda: _status(film, user.bearer) == 401)
