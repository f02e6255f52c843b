"""The same services on PostgreSQL (asyncpg) as a URL change: sign-up to films, refresh,
reset, admin edits and favourites, and a mailer sending and recording an email. Each run
gets fresh databases, dropped afterwards. Skipped, with the reason, where no PostgreSQL
answers on 127.0.0.1:5432 (failed instead under CI=true)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from common.db import make_engine
from common.events import EMAIL_CODES_TOPIC, EmailCodeEvent, EmailEventType
from common.kafka import KafkaSettings, ensure_topics, make_producer
from infra.broker import EmbeddedBroker
from tests.accounts import new_account
from tests.conftest import TEST_RESEND_COOLDOWN, Stack
from tests.integration.test_auth_api import PASSWORD
from tests.integration.test_keys_and_roles import run_cli
from tests.integration.test_passkeys import login_options, passkey_login, with_passkey
from tests.integration.test_private_key_jwt import assertion, with_assertion
from tests.integration.test_pushed_requests import BASIC as PUSHED_CLIENT
from tests.integration.test_pushed_requests import authorize as pushed_authorize
from tests.integration.test_pushed_requests import request_for
from tests.integration.test_two_step import one_code_one_sign_in
from tests.passkey_device import Device
from tests.postgres import create_databases, database_url, drop_databases
from tests.support import PUSHED_REDIRECT, Minter, ServiceProcess, unique_email, wait_until
from tests.tcp_relay import TcpRelay


@pytest.fixture(scope="module")
def pg_services(stack: Stack) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    run = uuid.uuid4().hex[:8]
    names = [f"auth_{run}", f"films_{run}"]
    asyncio.run(create_databases(*names))
    started: list[ServiceProcess] = []
    try:
        started.append(
            stack.spawn("auth_service", f"auth-pg-{run}", AUTH_DATABASE_URL=database_url(names[0]))
        )
        started.append(
            stack.spawn(
                "films_service", f"films-pg-{run}", FILMS_DATABASE_URL=database_url(names[1])
            )
        )
        yield started[0], started[1]
    finally:
        for service in started:
            service.stop()
        asyncio.run(drop_databases(*names))


def test_auth_on_postgres(stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]) -> None:
    auth, _ = pg_services
    email = unique_email("pg")
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        assert (
            http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code
            == 202
        )
        code = stack.smtp.wait_for(email)[-1].code
        assert code is not None
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        assert http.post("/v1/auth/verify", json={"email": email, "code": wrong}).status_code == 400
        pair = http.post("/v1/auth/verify", json={"email": email, "code": code}).json()
        rotated = http.post("/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200
        me = http.get(
            "/v1/auth/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
        )
        assert me.json()["email"] == email
        reuse = http.post("/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reuse.status_code == 401
        # Reuse ended the session: its access tokens are refused by auth from now on.
        me = http.get(
            "/v1/auth/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
        )
        assert me.status_code == 401

        time.sleep(TEST_RESEND_COOLDOWN)
        assert http.post("/v1/auth/password/forgot", json={"email": email}).status_code == 202
        reset_code = stack.smtp.wait_for(email, count=2)[-1].code
        r = http.post(
            "/v1/auth/password/reset",
            json={"email": email, "code": reset_code, "new_password": "a new pg passphrase"},
        )
        assert r.status_code == 204
        assert (
            http.post(
                "/v1/auth/login", json={"email": email, "password": "a new pg passphrase"}
            ).status_code
            == 200
        )
        assert (
            http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code
            == 401
        )
        # A success after that failure clears the address's count (a Core UPDATE).
        assert (
            http.post(
                "/v1/auth/login", json={"email": email, "password": "a new pg passphrase"}
            ).status_code
            == 200
        )


def test_identity_flows_on_postgres(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    """Sessions, the token endpoint, email change, the admin API and deletion (cascades
    and all) on PostgreSQL."""
    auth, _ = pg_services
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        admin_email, email = unique_email("pg-admin"), unique_email("pg-user")
        for address in (admin_email, email):
            http.post("/v1/auth/signup", json={"email": address, "password": PASSWORD})
            code = stack.smtp.wait_for(address)[-1].code
            assert http.post("/v1/auth/verify", json={"email": address, "code": code}).is_success
        done = run_cli(auth.env, "roles", "grant", admin_email, "admin")
        assert done.returncode == 0, done.stderr
        admin = bearer(login(http, admin_email)["access_token"])
        form = {"grant_type": "password", "username": email, "password": PASSWORD}
        pair = http.post("/v1/auth/token", data=form).json()
        user = bearer(pair["access_token"])
        other = login(http, email)
        sessions = http.get("/v1/auth/sessions", headers=user).json()["items"]
        assert len(sessions) == 3  # verification, token endpoint, login
        assert http.delete("/v1/auth/sessions", headers=user).status_code == 204
        refused = http.post(
            "/v1/auth/token/refresh", json={"refresh_token": other["refresh_token"]}
        )
        assert refused.status_code == 401

        time.sleep(TEST_RESEND_COOLDOWN)
        new_email = unique_email("pg-moved")
        change = {"new_email": new_email, "password": PASSWORD}
        assert http.post("/v1/auth/email/change", json=change, headers=user).status_code == 202
        code = stack.smtp.wait_for(new_email)[-1].code
        moved = http.post("/v1/auth/email/change/confirm", json={"code": code}, headers=user)
        assert moved.status_code == 200
        user = bearer(moved.json()["access_token"])

        found = http.get("/v1/admin/users", params={"q": "pg-moved"}, headers=admin).json()
        assert [u["email"] for u in found["items"]] == [new_email]
        user_id = found["items"][0]["id"]
        disabled = http.patch(f"/v1/admin/users/{user_id}", json={"disabled": True}, headers=admin)
        assert disabled.json()["disabled"] is True
        assert http.get("/v1/auth/me", headers=user).status_code == 401
        http.patch(f"/v1/admin/users/{user_id}", json={"disabled": False}, headers=admin)
        user = bearer(login(http, new_email)["access_token"])
        gone = http.request("DELETE", "/v1/auth/me", json={"password": PASSWORD}, headers=user)
        assert gone.status_code == 204
        assert http.get(f"/v1/admin/users/{user_id}", headers=admin).status_code == 404


def test_two_step_sign_in_on_postgres(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    """Racing second steps with one app code (row locks, not SQLite's one writer, keep
    them apart), then the account's deletion takes its factor and codes along."""
    auth, _ = pg_services
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        account = new_account(stack, http, "pg-mfa", auth=auth.url)
        one_code_one_sign_in(http, account)
        gone = http.request(
            "DELETE", "/v1/auth/me", json={"password": PASSWORD}, headers=account.bearer
        )
        assert gone.status_code == 204
        again = http.post("/v1/auth/login", json={"email": account.email, "password": PASSWORD})
        assert again.json()["error"] == "invalid_credentials"


def test_passkeys_on_postgres(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    """A passkey added and used; one answer sent four times at once signs in once (the
    challenge's DELETE under PostgreSQL's row locks); the account's deletion takes it."""
    auth, _ = pg_services
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        account = new_account(stack, http, "pg-passkey", auth=auth.url)
        device = Device(counting=True)
        with_passkey(http, account, device)
        answer = device.get(login_options(http))
        with ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(lambda _: passkey_login(http, answer).status_code, range(4)))
        assert codes == [200, 401, 401, 401]
        assert passkey_login(http, device.get(login_options(http))).status_code == 200
        gone = http.request(
            "DELETE", "/v1/auth/me", json={"password": PASSWORD}, headers=account.bearer
        )
        assert gone.status_code == 204
        refused = passkey_login(http, device.get(login_options(http)))
        assert refused.json()["error"] == "passkey_not_accepted"


def test_a_client_assertion_is_taken_once_on_postgres(
    pg_services: tuple[ServiceProcess, ServiceProcess],
) -> None:
    """private_key_jwt's replay store: the second use of one assertion is refused."""
    auth, _ = pg_services
    signed = assertion()
    form = with_assertion(signed, grant_type="client_credentials")
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        assert http.post("/v1/auth/token", data=form).status_code == 200
        again = http.post("/v1/auth/token", data=form)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"


def test_a_pushed_request_gives_one_code_on_postgres(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    """RFC 9126's store: read back, then spent by one of four tabs at once (the row is
    locked until the code's transaction ends)."""
    auth, _ = pg_services
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        account = new_account(stack, http, "pg-pushed", auth=auth.url)
        r = http.post("/v1/auth/par", data=request_for("v" * 43), auth=PUSHED_CLIENT)
        assert r.status_code == 201, r.text
        request_uri = r.json()["request_uri"]
        found = http.post(
            "/v1/auth/oauth/client",
            json={"client_id": "test-pushed", "request_uri": request_uri},
        )
        assert found.json()["request"]["redirect_uri"] == PUSHED_REDIRECT

    def one(_: int) -> int:
        with httpx.Client(base_url=auth.url, timeout=30) as tab:
            return pushed_authorize(tab, account, "test-pushed", request_uri).status_code

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(one, range(4))) == [200, 400, 400, 400]


def test_a_signup_answers_without_waiting_for_the_account(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    """A sign-up for a verified address is answered while another transaction holds the
    account's row: the answer waits for nothing the address's state decides. What that
    state makes of it, the "account exists" email, goes out once the row is free."""
    auth, _ = pg_services
    with httpx.Client(base_url=auth.url, timeout=30) as http:
        account = new_account(stack, http, "pg-held", auth=auth.url)
    time.sleep(TEST_RESEND_COOLDOWN)  # so that the next sign-up's email is sent
    asyncio.run(signup_while_held(stack, auth, account.email))
    notice = stack.smtp.wait_for(account.email, count=2)[-1]
    assert notice.message["Subject"] == "You already have a Films account"


async def signup_while_held(stack: Stack, auth: ServiceProcess, email: str) -> None:
    engine = make_engine(auth.env["AUTH_DATABASE_URL"])
    try:
        async with engine.connect() as held:
            lock = text("SELECT id FROM users WHERE email = :email FOR UPDATE")
            assert (await held.execute(lock, {"email": email})).one()
            async with httpx.AsyncClient(base_url=auth.url, timeout=30) as http:
                r = await http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
            assert r.status_code == 202, r.text
            await asyncio.sleep(0.5)  # had the email not waited for the row, it would be here
            assert len(stack.smtp.to(email)) == 1  # the sign-up's code only
            await held.rollback()
    finally:
        await engine.dispose()


def login(http: httpx.Client, email: str) -> dict[str, str]:
    r = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    pair: dict[str, str] = r.json()
    return pair


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_films_on_postgres(
    stack: Stack, pg_services: tuple[ServiceProcess, ServiceProcess]
) -> None:
    _, films = pg_services
    minter = Minter(stack.key_dir)
    admin = {"Authorization": f"Bearer {minter.token(roles=['admin'])}"}
    user = {"Authorization": f"Bearer {minter.token()}"}
    with httpx.Client(base_url=films.url, timeout=30) as http:
        page = http.get(
            "/v1/films", params={"genre": "crime", "sort": "-year"}, headers=user
        ).json()
        assert page["total"] >= 10
        years = [f["year"] for f in page["items"]]
        assert years == sorted(years, reverse=True)
        assert http.get("/v1/films", params={"q": "100%_"}, headers=user).json()["total"] == 0
        created = http.post(
            "/v1/films",
            json={
                "title": "PG Test",
                "year": 2020,
                "genres": ["Drama"],
                "director": "X",
                "runtime_minutes": 90,
            },
            headers=admin,
        )
        assert created.status_code == 201
        film_id = created.json()["id"]
        assert http.put(f"/v1/me/favourites/{film_id}", headers=user).status_code == 204
        assert [f["id"] for f in http.get("/v1/me/favourites", headers=user).json()] == [film_id]
        assert http.delete(f"/v1/films/{film_id}", headers=admin).status_code == 204
        assert http.get("/v1/me/favourites", headers=user).json() == []  # cascaded


def test_mailer_on_postgres(stack: Stack) -> None:
    """A mailer process on PostgreSQL, on a broker of its own (the shared stack's mailer
    must not take its events): an email sent, recorded and shown in its history."""
    name = f"mailer_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_databases(name))
    email = unique_email("pg-mail")
    event = EmailCodeEvent(type=EmailEventType.EMAIL_VERIFICATION, email=email, code="765432")
    try:
        with EmbeddedBroker() as broker:
            mailer = stack.spawn(
                "mailer_service",
                name,
                KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
                MAILER_DATABASE_URL=database_url(name),
                MAILER_GROUP_ID=name,
            )
            try:
                kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)

                async def publish() -> None:
                    await ensure_topics(kafka, EMAIL_CODES_TOPIC)
                    producer = make_producer(kafka)
                    await producer.start()
                    try:
                        await producer.send_and_wait(
                            EMAIL_CODES_TOPIC, event.to_bytes(), key=event.key
                        )
                    finally:
                        await producer.stop()

                asyncio.run(publish())
                [mail] = stack.smtp.wait_for(email, timeout=60)
                assert mail.code == "765432"
                admin = {"Authorization": f"Bearer {Minter(stack.key_dir).token(roles=['admin'])}"}

                def history() -> list[dict[str, object]]:
                    r = httpx.get(
                        f"{mailer.url}/v1/deliveries", params={"email": email}, headers=admin
                    )
                    return r.json()["items"]

                [item] = wait_until(history, 10)
                assert (item["event_id"], item["status"]) == (event.event_id, "sent")
            finally:
                mailer.stop()
    finally:
        asyncio.run(drop_databases(name))


def test_auth_answers_503_while_its_database_is_away_and_recovers(stack: Stack) -> None:
    """Auth's PostgreSQL goes away (a relay between them is cut: every connection reset,
    new ones refused) and comes back. Meanwhile a request answers 503
    `database_unavailable`: first on a pooled connection that dies under it, then with no
    connection to be had. Once the server is back, the same process serves again."""
    name = f"auth_away_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_databases(name))
    server = make_url(database_url(name))
    try:
        with TcpRelay(server.port or 5432, server.host or "127.0.0.1") as relay:
            through_relay = server.set(host="127.0.0.1", port=relay.port)
            auth = stack.spawn(
                "auth_service",
                name,
                AUTH_DATABASE_URL=through_relay.render_as_string(hide_password=False),
            )
            try:
                with httpx.Client(base_url=auth.url, timeout=30) as http:

                    def login() -> httpx.Response:
                        unknown = {"email": unique_email("away"), "password": PASSWORD}
                        return http.post("/v1/auth/login", json=unknown)

                    assert login().status_code == 401
                    relay.cut()
                    for _ in range(2):
                        away = login()
                        assert away.status_code == 503
                        assert away.json()["error"] == "database_unavailable"
                    assert http.get("/readyz").status_code == 503
                    relay.restore()
                    assert login().status_code == 401
                    assert http.get("/readyz").status_code == 200
            finally:
                auth.stop()
    finally:
        asyncio.run(drop_databases(name))
