"""The deployed system: a gateway in front of two instances of each service (the web
front end at `/`), on PostgreSQL, Redis, the broker and SMTP, as `python -m infra.stack
--prod` runs it. Every
fault test asserts that nothing accepted is lost and that duplicates stay in their bound
(one SMTP connection per mailer: at most one email repeated per crash)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.ports import free_port
from infra.processes import ROOT
from tests.dpop_keys import ProofKey
from tests.support import wait_until
from tests.topology.conftest import Deployed

PASSWORD = "topology passphrase"


def emails(tag: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{tag}-{run}-{i:04d}@example.com" for i in range(n)]


CUT_OFF = -1


async def sign_up(url: str, addresses: Iterable[str], parallel: int = 12) -> list[int]:
    """Sign-ups through the gateway; no answer (a hang) counts as status 0, an answer cut
    off because its instance died mid-write (headers sent, body not) as CUT_OFF."""
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def one(email: str) -> int:
            async with gate:
                body = {"email": email, "password": PASSWORD}
                try:
                    return (await http.post("/v1/auth/signup", json=body)).status_code
                except httpx.TimeoutException:
                    return 0  # a hang: what the gateway must never give
                except httpx.RemoteProtocolError:
                    return CUT_OFF  # an error at once, as a 502 is

        return list(await asyncio.gather(*map(one, addresses)))


def all_delivered(deployed: Deployed, addresses: list[str], timeout: float = 120) -> dict[str, int]:
    try:
        wait_until(lambda: len(deployed.delivered(addresses)) == len(addresses), timeout, 0.2)
    except AssertionError:
        missing = sorted(set(addresses) - set(deployed.delivered(addresses)))
        raise AssertionError(
            f"{len(missing)} not delivered:\n{explain(deployed, missing)}"
        ) from None
    return deployed.delivered(addresses)


def explain(deployed: Deployed, missing: list[str]) -> str:
    """Where the missing emails are: their outbox rows and the mailer's records."""

    async def read() -> str:
        lines = []
        for service, query in (
            ("AUTH", "SELECT key, sent_at, acked_at, publishes FROM outbox WHERE key = ANY(:k)"),
            (
                "MAILER",
                "SELECT recipient, status, attempts FROM deliveries WHERE recipient = ANY(:k)",
            ),
        ):
            engine = create_async_engine(deployed.topology.base_env[f"{service}_DATABASE_URL"])
            try:
                async with engine.connect() as conn:
                    rows = (await conn.execute(text(query), {"k": missing[:20]})).all()
                lines += [f"{service.lower()}: {tuple(row)}" for row in rows]
            finally:
                await engine.dispose()
        return "\n".join(lines)

    tables = asyncio.run(read())
    dumps = []
    for instance in deployed.instances("auth"):  # what the relays wait on, if anything
        if instance.process is not None:
            instance.process.send_signal(signal.SIGUSR1)
    time.sleep(1)
    for instance in deployed.instances("auth"):
        dumps += [line for line in instance.logs().splitlines() if "asyncio tasks" in line][-1:]
    return tables + "\n" + "\n".join(dumps)


def audit_ips(deployed: Deployed, email: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_async_engine(deployed.topology.base_env["AUTH_DATABASE_URL"])
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT ip FROM audit_events WHERE email = :email"), {"email": email}
                )
                return [row.ip for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_whole_flow_through_the_gateway(deployed: Deployed) -> None:
    [email] = emails("flow", 1)
    with deployed.client() as http:
        assert (
            http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code
            == 202
        )
        [mail] = deployed.smtp.wait_for(email, timeout=60)
        pair = http.post("/v1/auth/verify", json={"email": email, "code": mail.code}).json()
        bearer = {"Authorization": f"Bearer {pair['access_token']}"}
        assert http.get("/v1/auth/me", headers=bearer).json()["email"] == email
        # Films on either instance verify with keys fetched through the gateway (JWKS).
        for _ in range(4):
            assert http.get("/v1/films/1", headers=bearer).status_code == 200
        assert http.put("/v1/me/favourites/1", headers=bearer).status_code == 204
        assert [f["id"] for f in http.get("/v1/me/favourites", headers=bearer).json()] == [1]
        rotated = http.post("/v1/auth/token/refresh", json={"refresh_token": pair["refresh_token"]})
        assert rotated.status_code == 200
        login = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200
        # Unknown API paths and the services' internal endpoints: the gateway's JSON 404.
        for path in ("/v1/nowhere", "/readyz", "/metrics"):
            answer = http.get(path)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found", path
        assert http.get("/healthz").json()["status"] == "ok"


def test_tokens_bound_to_a_key_through_the_gateway(deployed: Deployed) -> None:
    """A DPoP proof names the address the client called, the gateway's: nginx passes the
    Host on, so auth and every films instance see the same URL (RFC 9449 §4.3)."""
    [email] = emails("dpop", 1)
    key = ProofKey()
    token_url, base = f"{deployed.url}/v1/auth/token", deployed.url
    with deployed.client() as http:
        http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        [mail] = deployed.smtp.wait_for(email, timeout=60)
        assert http.post("/v1/auth/verify", json={"email": email, "code": mail.code}).is_success
        form = {"grant_type": "password", "username": email, "password": PASSWORD}
        pair = http.post(
            "/v1/auth/token", data=form, headers={"DPoP": key.proof("POST", token_url)}
        )
        assert pair.status_code == 200, pair.text
        access = pair.json()["access_token"]
        for _ in range(4):  # both films instances
            sent = key.authorization("GET", f"{base}/v1/films/1", access)
            assert http.get("/v1/films/1", headers=sent).status_code == 200
        sent = key.authorization("GET", f"{base}/v1/auth/me", access)
        assert http.get("/v1/auth/me", headers=sent).json()["email"] == email
        refresh = {"grant_type": "refresh_token", "refresh_token": pair.json()["refresh_token"]}
        refreshed = http.post(
            "/v1/auth/token", data=refresh, headers={"DPoP": key.proof("POST", token_url)}
        )
        assert refreshed.status_code == 200 and refreshed.json()["token_type"] == "DPoP"


def raw_request(url: str, request: bytes) -> tuple[int, bytes, bytes]:
    """Bytes no HTTP client would send: (status, headers, body) of the answer."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_what_nginx_refuses_itself_is_json_too(deployed: Deployed) -> None:
    """Requests the gateway turns away before any service sees them used to get nginx's
    HTML pages."""
    close = b"Host: x\r\nConnection: close\r\n\r\n"
    cases = [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /%zz HTTP/1.1\r\n" + close, 400, "bad_request"),
        (
            b"GET /v1/auth/me HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n" + close,
            400,
            "bad_request",
        ),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n" + close, 414, "uri_too_long"),
        (b"GET / HTTP/9.1\r\n" + close, 505, "http_version_not_supported"),
        (b"GET /.gateway/bad_request HTTP/1.1\r\n" + close, 404, "not_found"),
    ]
    for request, status, error in cases:
        got, head, body = raw_request(deployed.url, request)
        assert (got, json.loads(body)["error"]) == (status, error), (request[:40], head, body)
        assert b"content-type: application/json" in head.lower()


def form_token(page: httpx.Response) -> str:
    """The CSRF token a page's form carries."""
    assert page.status_code == 200, page.text[:500]
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_the_web_front_end_behind_the_gateway(deployed: Deployed) -> None:
    """A person signs up through the web's pages at the gateway: the code comes by email,
    the films list follows. Auth counts and audits the person's address, which the web
    forwards through the gateway, not the web's own (127.0.0.10)."""
    [email] = emails("web", 1)
    with deployed.client("127.0.0.6") as http:
        home = http.get("/")
        assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        assert home.headers["x-frame-options"] == "DENY"
        assert home.headers["x-content-type-options"] == "nosniff"
        assert home.headers["cache-control"] == "no-store"
        # As a browser posts: from this origin, which the web checks against the Host the
        # gateway passes on (with its port).
        origin = {"Origin": deployed.url}
        signup = {"csrf": form_token(http.get("/signup")), "email": email, "password": PASSWORD}
        answer = http.post("/signup", data=signup, headers=origin)
        assert answer.status_code == 303 and answer.headers["location"] == "/verify", answer.text
        [mail] = deployed.smtp.wait_for(email, timeout=60)
        verify = {"csrf": form_token(http.get("/verify")), "email": email, "code": mail.code}
        answer = http.post("/verify", data=verify, headers=origin)
        assert answer.status_code == 303 and answer.headers["location"] == "/films", answer.text
        films = http.get("/films")
        assert films.status_code == 200, films.text[:500]
        assert 'class="film-card"' in films.text
        assert http.get("/films/1").status_code == 200
    assert set(audit_ips(deployed, email)) == {"127.0.0.6"}


def test_two_client_addresses_get_two_buckets(deployed: Deployed) -> None:
    """ip:forgot allows 4 a minute here: one address spends its 4, the other is untouched."""
    with deployed.client("127.0.0.2") as first, deployed.client("127.0.0.3") as second:
        for _ in range(4):
            assert (
                first.post("/v1/auth/password/forgot", json={"email": "a@example.com"}).status_code
                == 202
            )
        refused = first.post("/v1/auth/password/forgot", json={"email": "a@example.com"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"] == "rate_limited"
        assert (
            second.post("/v1/auth/password/forgot", json={"email": "a@example.com"}).status_code
            == 202
        )


def test_the_audit_log_has_the_real_client_and_a_forged_header_is_ignored(
    deployed: Deployed,
) -> None:
    [through_gateway, direct] = emails("forged", 2)
    forged = {"X-Forwarded-For": "203.0.113.66"}
    body = {"password": "wrong password"}
    with deployed.client("127.0.0.4") as http:  # through the gateway, claiming to be another
        http.post("/v1/auth/login", json={**body, "email": through_gateway}, headers=forged)
    auth = deployed.instances("auth")[0]  # straight to an instance, not the gateway
    httpx.post(f"{auth.url}/v1/auth/login", json={**body, "email": direct}, headers=forged)
    assert set(audit_ips(deployed, through_gateway)) == {"127.0.0.4"}
    assert set(audit_ips(deployed, direct)) == {"127.0.0.1"}


def test_the_two_auth_instances_share_one_limit(deployed: Deployed) -> None:
    """Straight to each instance in turn, from one address: the fifth is refused, wherever."""
    first, second = deployed.instances("auth")
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.5")) as http:
        for url in (first.url, second.url, first.url, second.url):
            r = http.post(f"{url}/v1/auth/password/forgot", json={"email": "b@example.com"})
            assert r.status_code == 202
        for url in (first.url, second.url):
            r = http.post(f"{url}/v1/auth/password/forgot", json={"email": "b@example.com"})
            assert r.status_code == 429


def test_an_auth_instance_killed_during_300_sign_ups(deployed: Deployed) -> None:
    """The relay's own instance dies: the other takes the relay over; every 202 is
    delivered; requests in flight get an error at once, later ones the live instance."""
    leader = deployed.leader()
    addresses = emails("auth-kill", 300)

    async def run() -> list[int]:
        signing_up = asyncio.create_task(sign_up(deployed.url, addresses))
        await asyncio.to_thread(
            wait_until, lambda: len(deployed.delivered(addresses)) >= 60, 120, 0.05
        )
        leader.stop(signal.SIGKILL)
        return await signing_up

    statuses = asyncio.run(run())
    try:
        accepted = [a for a, s in zip(addresses, statuses, strict=True) if s == 202]
        failed = [s for s in statuses if s != 202]
        assert 0 not in statuses, "a client got no answer"
        assert set(failed) <= {502, 503, CUT_OFF}, failed
        assert statuses[-50:] == [202] * 50  # later requests go to the live instance
        got = all_delivered(deployed, accepted)
        assert max(got.values()) <= 2 and sum(got.values()) - len(accepted) <= 1
        print(
            f"\nauth SIGKILLed mid-stream: {len(accepted)} of 300 accepted, all delivered; "
            f"{len(failed)} answered {sorted(set(failed))}"
        )
    finally:
        leader.start()


def test_a_mailer_killed_mid_stream(deployed: Deployed) -> None:
    victim = deployed.instances("mailer")[0]
    addresses = emails("mailer-kill", 200)

    async def run() -> list[int]:
        signing_up = asyncio.create_task(sign_up(deployed.url, addresses))
        await asyncio.to_thread(
            wait_until, lambda: len(deployed.delivered(addresses)) >= 40, 120, 0.05
        )
        victim.stop(signal.SIGKILL)
        return await signing_up

    statuses = asyncio.run(run())
    try:
        assert set(statuses) == {202}
        got = all_delivered(deployed, addresses, timeout=180)
        assert sum(got.values()) - len(addresses) <= 1  # one SMTP connection, one crash
    finally:
        victim.start()


def test_the_broker_restarted_then_killed_mid_stream(deployed: Deployed) -> None:
    """A restart (empty, as the embedded broker comes back) while idle, then a SIGKILL
    in the middle of sign-ups, which go on while it is away: every 202 ends in an email;
    no service is restarted."""
    before = emails("broker-idle", 10)
    deployed.topology.kill_broker()
    assert set(asyncio.run(sign_up(deployed.url, before))) == {202}
    deployed.topology.start_broker()
    back = time.monotonic()
    all_delivered(deployed, before, timeout=120)
    print(
        f"\nbroker back empty: the 10 emails accepted meanwhile {time.monotonic() - back:.1f} s on"
    )

    addresses = emails("broker-kill", 200)
    first, rest = addresses[:120], addresses[120:]

    async def run() -> list[int]:
        signing_up = asyncio.create_task(sign_up(deployed.url, first))
        await asyncio.to_thread(
            wait_until, lambda: len(deployed.delivered(addresses)) >= 40, 120, 0.05
        )
        deployed.topology.kill_broker()
        # The rest only now, so that however fast the machine, sign-ups are accepted while
        # the broker is away and after it is back, not all before the kill.
        going_on = asyncio.create_task(sign_up(deployed.url, rest))
        await asyncio.sleep(2)
        deployed.topology.start_broker()
        return await signing_up + await going_on

    statuses = asyncio.run(run())
    assert set(statuses) == {202}
    got = all_delivered(deployed, addresses, timeout=180)
    assert sum(got.values()) - len(addresses) <= 1


def test_the_runner_prints_ready_and_stops_on_sigterm(deployed: Deployed) -> None:
    """`python -m infra.stack --prod` itself: given the broker, SMTP, Redis and keys of
    the running topology (its own databases and gateway port), it says `ready` and stops
    everything on SIGTERM. One instance of each (`--instances 1`): two of each are what
    the `deployed` fixture runs, from the same code."""
    env = {
        **deployed.topology.base_env,
        "GATEWAY_PORT": str(free_port()),
    }
    for name in ("AUTH", "FILMS", "MAILER", "WEB"):
        env.pop(f"{name}_DATABASE_URL", None)
    for name in ("FILMS_JWKS_URL", "MAILER_JWKS_URL", "AUTH_TRUSTED_PROXIES"):
        env.pop(name, None)
    for name in ("AUTH", "FILMS", "MAILER"):
        env.pop(f"WEB_{name}_URL", None)  # its own gateway's
    env["MAILER_GROUP_ID"] = f"runner-{uuid.uuid4().hex[:6]}"
    with subprocess.Popen(
        [sys.executable, "-m", "infra.stack", "--prod", "--instances", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as runner:
        try:
            assert runner.stdout is not None
            seen = []
            for line in runner.stdout:
                seen.append(line)
                if line.strip() == "ready":
                    break
            assert seen and seen[-1].strip() == "ready", "".join(seen[-20:])
            gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
            assert any(f"the web front end is at {gateway}" in line for line in seen)
            assert httpx.get(f"{gateway}/.well-known/jwks.json").status_code == 200
            assert httpx.get(f"{gateway}/").headers["content-type"].startswith("text/html")
            runner.send_signal(signal.SIGTERM)
            assert runner.wait(60) == 0
            assert "stopped" in runner.stdout.read()
        finally:
            if runner.poll() is None:
                runner.kill()
