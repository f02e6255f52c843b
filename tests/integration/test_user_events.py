"""User lifecycle events on the real broker: one account's whole life, read back from
`auth.user-events` in order, keyed by the user id, with no secret in any of them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from common.events import USER_EVENTS_TOPIC
from tests.accounts import PASSWORD, Account, code_for, cooled_down_account, new_admin
from tests.conftest import Stack
from tests.support import unique_email

LIFE = [
    "user.signed_up",
    "user.verified",
    "user.password_changed",
    "user.email_changed",
    "user.disabled",
    "user.enabled",
    "user.deleted",
]


async def events_of(bootstrap: str, user_id: str, count: int) -> list[Any]:
    """The first `count` records keyed by `user_id`, from the start of the topic."""
    consumer = AIOKafkaConsumer(
        USER_EVENTS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [r for r in records if r.key == user_id.encode()]
    finally:
        await consumer.stop()
    return found


def live_an_account(stack: Stack, http: httpx.Client) -> tuple[Account, str, str]:
    """Sign up, verify, change the password and the address, get disabled and enabled by
    an admin, delete: (the account, its new address, the new password)."""
    admin = new_admin(stack, http)
    account = cooled_down_account(stack, http, "lifetime")
    new_password = "the second passphrase"
    auth = stack.auth.url
    r = http.post(
        f"{auth}/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=account.bearer,
    )
    assert r.status_code == 204
    new_email = unique_email("relocated")
    r = http.post(
        f"{auth}/v1/auth/email/change",
        json={"new_email": new_email, "password": new_password},
        headers=account.bearer,
    )
    assert r.status_code == 202
    pair = http.post(
        f"{auth}/v1/auth/email/change/confirm",
        json={"code": code_for(stack, new_email)},
        headers=account.bearer,
    ).json()
    for disabled in (True, False):
        r = http.patch(
            f"{auth}/v1/admin/users/{account.id}",
            json={"disabled": disabled},
            headers=admin.bearer,
        )
        assert r.status_code == 200
    r = http.post(f"{auth}/v1/auth/login", json={"email": new_email, "password": new_password})
    session = r.json()
    r = http.request(
        "DELETE",
        f"{auth}/v1/auth/me",
        json={"password": new_password},
        headers={"Authorization": f"Bearer {session['access_token']}"},
    )
    assert r.status_code == 204
    secrets = [PASSWORD, new_password, pair["access_token"], pair["refresh_token"]]
    return account, new_email, json.dumps(secrets)


async def test_an_accounts_life_on_the_topic(stack: Stack) -> None:
    with httpx.Client(timeout=30) as http:
        account, new_email, secrets = await asyncio.to_thread(live_an_account, stack, http)
    records = await events_of(stack.kafka_bootstrap, account.id, len(LIFE))
    events = [json.loads(r.value) for r in records]
    assert [e["type"] for e in events] == LIFE
    assert {r.partition for r in records} == {records[0].partition}  # keyed: one partition
    for event in events:
        assert event["user_id"] == account.id
        extra = {"email", "session_id"}
        assert set(event) - extra == {"event_id", "type", "user_id", "occurred_at"}
        assert ("email" in event) == (event["type"] == "user.deleted")
        # The session the owner changed the password in, which stays signed in.
        assert ("session_id" in event) == (event["type"] == "user.password_changed")
        for secret in json.loads(secrets):
            assert secret not in json.dumps(event)
    assert events[-1]["email"] == new_email  # so the mailer can forget that address
    assert events[2]["session_id"] == account.sid
    assert len({e["event_id"] for e in events}) == len(events)
