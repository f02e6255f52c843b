"""A disabled or deleted account's access tokens, and after a password change those of
its other sessions, stop working in films and the mailer, which check tokens offline,
within moments of the event on `auth.user-events`; not after the token's last minute, as
before. A films process started later refuses them too."""

from __future__ import annotations

import asyncio
import time

import httpx
from aiokafka import AIOKafkaProducer

from common.events import USER_EVENTS_TOPIC, UserEvent, UserEventType
from common.kafka import KafkaSettings, ensure_topics
from common.revocations import RevocationFeed, Revocations
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from tests.accounts import PASSWORD, login, new_account, new_admin
from tests.conftest import Stack
from tests.support import wait_until, wait_until_async


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


def test_a_password_change_takes_back_the_other_sessions_tokens_only(stack: Stack) -> None:
    """The change ends every other session, and keeps the one that made it."""
    with stack.http() as http:
        changer = new_account(stack, http, "changer")
        elsewhere = login(stack, http, changer.email)
        time.sleep(1.1)  # a token of the change's own second stays valid: not this one
        film = f"{stack.films.url}/v1/films/1"
        assert _status(film, elsewhere.bearer) == 200
        r = http.post(
            f"{stack.auth.url}/v1/auth/password/change",
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
            headers=changer.bearer,
        )
        assert r.status_code == 204, r.text
        wait_until(lambda: _status(film, elsewhere.bearer) == 401)
        assert _status(film, changer.bearer) == 200


async def _publish(bootstrap: str, *events: UserEvent) -> None:
    """As auth's relay does: the topic made first, with its partitions, then the events."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    await ensure_topics(kafka, USER_EVENTS_TOPIC)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(USER_EVENTS_TOPIC, event.to_json().encode(), event.key)
    finally:
        await producer.stop()


def _disabled(user_id: str) -> UserEvent:
    return UserEvent(type=UserEventType.DISABLED, user_id=user_id)


async def test_the_feed_waits_for_the_topic_and_reads_it_again_after_a_broker_reset() -> None:
    """Started before auth made the topic, the feed found no partitions and ended for good
    (on Apache Kafka always: its metadata at start lists no topics). A broker that
    restarted empty reports no error for the offsets it lost: the feed waited for the new
    log to pass its old position."""
    broker = EmbeddedBroker(port=free_port()).start()
    revocations = Revocations()
    feed = RevocationFeed(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), revocations)
    feed.start()
    try:
        await asyncio.sleep(1.0)  # the feed is up, the topic is not
        await _publish(broker.bootstrap_servers, *(_disabled(f"before-{i}") for i in range(5)))
        late = {"sub": "before-4", "iat": 0}
        await wait_until_async(lambda: revocations.revoked(late), timeout=60)
        broker.stop()
        broker = EmbeddedBroker(port=broker.port).start()  # empty, same address
        await _publish(broker.bootstrap_servers, _disabled("after-reset"))
        after = {"sub": "after-reset", "iat": 0}
        await wait_until_async(lambda: revocations.revoked(after), timeout=60)
    finally:
        await feed.stop()
        broker.stop()


def test_a_logout_and_ended_sessions_are_refused_by_films_and_the_mailer(stack: Stack) -> None:
    """Sessions ended one at a time (a logout, "sign out everywhere else") reach films and
    the mailer on auth.session-events: their tokens are refused, the rest go on."""
    with stack.http() as http:
        admin = new_admin(stack, http)
        leaving = login(stack, http, admin.email)
        elsewhere = login(stack, http, admin.email)
        staying = login(stack, http, admin.email)
        film = f"{stack.films.url}/v1/films/1"
        deliveries = f"{stack.mailer.url}/v1/deliveries?email={admin.email}"
        for account in (leaving, elsewhere, staying):
            assert _status(film, account.bearer) == 200
        out = http.post(
            f"{stack.auth.url}/v1/auth/logout", json={"refresh_token": leaving.refresh_token}
        )
        assert out.status_code == 204
        wait_until(lambda: _status(film, leaving.bearer) == 401)
        wait_until(lambda: _status(deliveries, leaving.bearer) == 401)
        assert _status(film, elsewhere.bearer) == 200
        late = stack.spawn("films_service", "films-late-sessions")
        try:  # it read the ended sessions back from before it started
            wait_until(lambda: _status(f"{late.url}/v1/films/1", leaving.bearer) == 401)
            assert _status(f"{late.url}/v1/films/1", elsewhere.bearer) == 200
        finally:
            late.stop()
        ended = http.delete(f"{stack.auth.url}/v1/auth/sessions", headers=staying.bearer)
        assert ended.status_code == 204
        wait_until(lambda: _status(film, elsewhere.bearer) == 401)
        wait_until(lambda: _status(film, admin.bearer) == 401)
        assert _status(film, staying.bearer) == 200
        assert _status(deliveries, staying.bearer) == 200
