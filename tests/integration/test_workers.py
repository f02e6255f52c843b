"""Auth with several worker processes (AUTH_WORKERS=2) on one SQLite file, as an operator
who wants them would run it: the outbox is relayed by one worker only (every email
published once), the rate limits are one count in Redis for both workers, failures
counted by both workers at once are all counted, and a key rotation reaches every
worker. Without Redis, more than one worker refuses to start."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from auth_service.config import AuthSettings
from auth_service.ratelimit import REDIS_RETRY
from tests.accounts import code_for
from tests.conftest import Stack
from tests.dpop_keys import ProofKey
from tests.integration.test_keys_and_roles import run_cli
from tests.support import ROOT, ServiceProcess, wait_until
from tests.unit.test_ratelimit import REDIS_URL

PASSWORD = "workers passphrase"


@pytest.fixture(scope="module")
def workers(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    keys = stack.own_keys(tmp_path_factory.mktemp("worker-keys"))
    service = stack.spawn(
        "auth_service",
        "auth-workers",
        **keys,
        AUTH_WORKERS="2",
        AUTH_REDIS_URL=REDIS_URL,
        AUTH_REDIS_KEY_PREFIX=f"workers-{uuid.uuid4().hex[:8]}",
        AUTH_RATE_LIMIT_ENABLED="true",
        AUTH_LOCKOUT_THRESHOLD="1000",
        AUTH_RATE_LIMITS=json.dumps(
            {
                "ip:signup": [10_000, 60],
                "ip:forgot": [4, 60],
                "ip:login": [10_000, 60],
                "account:login": [10_000, 60],
            }
        ),
    )
    try:
        yield service
    finally:
        service.stop()


def test_every_email_is_published_once(stack: Stack, workers: ServiceProcess) -> None:
    emails = [f"worker-{uuid.uuid4().hex[:8]}-{i}@example.com" for i in range(40)]

    async def sign_up() -> list[int]:
        limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers
        async with httpx.AsyncClient(base_url=workers.url, timeout=60, limits=limits) as http:
            return [
                r.status_code
                for r in await asyncio.gather(
                    *(
                        http.post("/v1/auth/signup", json={"email": e, "password": PASSWORD})
                        for e in emails
                    )
                )
            ]

    assert set(asyncio.run(sign_up())) == {202}
    for email in emails:
        assert len(stack.smtp.wait_for(email, timeout=60)) == 1
    with sqlite3.connect(stack.work / "auth-workers.db") as db:
        publishes = {row[0] for row in db.execute("SELECT publishes FROM outbox")}
    assert publishes == {1}  # one relay: nothing was published twice


HEALTHZ_COUNT = re.compile(
    r'^http_request_duration_seconds_count\{method="GET",route="/healthz",status="200"\} (\S+)$',
    re.M,
)
LEADERS = re.compile(r"^auth_outbox_relay_leader (\S+)$", re.M)


def _scrape(url: str) -> tuple[float, float]:
    """/healthz answers counted, and relaying workers, as one scrape reports them."""
    with httpx.Client(base_url=url) as http:  # a new connection: either worker
        text = http.get("/metrics").text
    count, leaders = HEALTHZ_COUNT.search(text), LEADERS.search(text)
    assert count is not None and leaders is not None, text
    return float(count.group(1)), float(leaders.group(1))


def test_every_scrape_reports_both_workers(workers: ServiceProcess) -> None:
    """A scrape reached one worker and reported its values only: counters jumped between
    scrapes, and the worker that does not relay said no one did."""
    start, _ = _scrape(workers.url)
    for _ in range(40):
        with httpx.Client(base_url=workers.url) as http:  # new connections: both workers
            assert http.get("/healthz").status_code == 200
    scrapes = {_scrape(workers.url) for _ in range(8)}
    assert scrapes == {(start + 40, 1.0)}


def test_both_workers_count_one_limit(workers: ServiceProcess) -> None:
    """Eight requests on eight connections, spread over the two workers by the kernel:
    four allowed in all (in-process counters would have allowed up to eight)."""
    # A worker that found Redis slow under the last test's load counts in its own memory
    # for REDIS_RETRY seconds (by design: never a 5xx); this test is about the shared count.
    time.sleep(REDIS_RETRY)
    statuses = []
    for _ in range(8):
        with httpx.Client(base_url=workers.url) as http:  # a new connection each time
            r = http.post("/v1/auth/password/forgot", json={"email": "w@example.com"})
            statuses.append(r.status_code)
    assert statuses.count(202) == 4 and statuses.count(429) == 4


def test_failures_counted_by_both_workers_at_once_all_count(
    stack: Stack, workers: ServiceProcess
) -> None:
    """Each failed login reads the address's count FOR UPDATE and writes it plus one. Both
    workers doing so at once on one SQLite file lost counts while that read ran outside the
    transaction (the driver's default; SQLite drops FOR UPDATE); it now begins the
    transaction IMMEDIATE, and every failure counts."""
    email = f"guess-{uuid.uuid4().hex[:8]}@example.com"
    attempts = 200  # below the lockout threshold (1000 here): every answer is a plain 401

    async def guess() -> list[int]:
        limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers
        async with httpx.AsyncClient(base_url=workers.url, timeout=60, limits=limits) as http:
            body = {"email": email, "password": "not the password"}
            answers = await asyncio.gather(
                *(http.post("/v1/auth/login", json=body) for _ in range(attempts))
            )
            return [a.status_code for a in answers]

    assert asyncio.run(guess()) == [401] * attempts
    with sqlite3.connect(stack.work / "auth-workers.db") as db:
        counted = db.execute(
            "SELECT login_failures FROM address_throttle WHERE email = ?", (email,)
        ).fetchall()
    assert counted == [(attempts,)]


def test_both_workers_take_a_dpop_proof_once(stack: Stack, workers: ServiceProcess) -> None:
    """One proof, sent eight times at once on eight connections that the kernel spreads
    over both workers: one sign-in, seven refusals. Each worker's own memory would have
    taken it once each; Redis tells them apart (RateLimiter.once). The kernel does not
    promise to use both; it did in the runs made while writing this: without
    `state.dpop_shared` this failed with two sign-ins. (tests/unit/test_ratelimit.py
    checks `once` itself between two limiters.)"""
    email = f"proof-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=workers.url, timeout=60) as http:
        http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        verified = http.post(
            "/v1/auth/verify", json={"email": email, "code": code_for(stack, email)}
        )
        assert verified.status_code == 200, verified.text
    time.sleep(REDIS_RETRY)  # as above: a worker that found Redis slow asks it again
    proof = ProofKey().proof("POST", f"{workers.url}/v1/auth/login")

    async def sign_in() -> list[str]:
        limits = httpx.Limits(max_keepalive_connections=0)  # new connections: both workers
        async with httpx.AsyncClient(base_url=workers.url, timeout=60, limits=limits) as http:
            body = {"email": email, "password": PASSWORD}
            answers = await asyncio.gather(
                *(http.post("/v1/auth/login", json=body, headers={"DPoP": proof}) for _ in range(8))
            )
            return sorted(a.json().get("error", a.json().get("token_type")) for a in answers)

    assert asyncio.run(sign_in()) == ["DPoP"] + ["invalid_dpop_proof"] * 7


def test_a_rotation_reaches_every_worker(workers: ServiceProcess) -> None:
    email = f"rotate-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=workers.url, timeout=60) as http:
        http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    done = run_cli(workers.env, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    new_kid = done.stdout.split("now signing with ")[1].split(";")[0]

    def kids() -> set[str]:
        seen = set()
        for _ in range(8):
            with httpx.Client(base_url=workers.url) as http:  # spread over the workers
                jwks = http.get("/.well-known/jwks.json").json()
                seen.add(jwks["keys"][0]["kid"])
        return seen

    assert wait_until(lambda: kids() == {new_kid}, 30, 1.0)


def test_several_workers_need_redis() -> None:
    with pytest.raises(ValidationError, match="AUTH_REDIS_URL"):
        AuthSettings(workers=2)
    assert AuthSettings(workers=2, rate_limit_enabled=False).workers == 2
    refused = subprocess.run(
        [sys.executable, "-m", "auth_service"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "AUTH_REDIS_URL"}, "AUTH_WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "AUTH_REDIS_URL" in refused.stderr
