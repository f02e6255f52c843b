"""Sign-up's answer by kind of address, the enumeration floor off: what its timing would
tell about an address if nothing padded it. A new address, one with a pending account
(whose sign-up checks the password against the pending one: a second argon2 verify) and
a verified one (an "account exists" email) take turns in a new order each time; the
resend cooldown is off, so each does all its work every time. The figure is the slowest
kind's median answer against the fastest kind's (goal: within 10 %)."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from pathlib import Path

import httpx

from bench.auth import seed_users
from bench.harness import Figure, median, start_pinned
from infra.processes import ServiceProcess

PASSWORD = "benchmark passphrase"
SAMPLES = 20  # per kind and round
# Between two sign-ups: the work the last one left after its answer is done by then, so
# each answer is timed on its own.
PAUSE_SECONDS = 0.15


def figure(work: Path, env: dict[str, str], database_url: str, rounds: int) -> Figure:
    auth_env = {
        **env,
        "AUTH_DATABASE_URL": database_url,
        "AUTH_RATE_LIMIT_ENABLED": "false",
        "AUTH_ENUMERATION_FLOOR_MS": "0",
        "AUTH_RESEND_COOLDOWN_SECONDS": "0",
    }
    auth = start_pinned(ServiceProcess("auth_service", "AUTH_PORT", auth_env, work, "auth-kinds"))
    tag = secrets.token_hex(4)
    try:
        with httpx.Client(base_url=auth.url, timeout=30) as http:

            def signup(email: str) -> float:
                started = time.perf_counter()
                r = http.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
                took = (time.perf_counter() - started) * 1000
                r.raise_for_status()
                time.sleep(PAUSE_SECONDS)
                return took

            pending = f"kinds-{tag}-pending@example.com"
            signup(pending)
            verified = asyncio.run(seed_users(database_url))[0]
            fresh = iter(range(1_000_000))
            addresses = {
                "new": lambda: f"kinds-{tag}-new-{next(fresh)}@example.com",
                "unverified": lambda: pending,
                "verified": lambda: verified,
            }
            signup(addresses["new"]())  # warm-up
            times: dict[str, list[float]] = {kind: [] for kind in addresses}
            order = list(addresses)
            for _ in range(rounds * SAMPLES):
                random.shuffle(order)
                for kind in order:
                    times[kind].append(signup(addresses[kind]()))
    finally:
        auth.stop()
    medians = {kind: median(taken) for kind, taken in times.items()}
    slowest = max(medians, key=medians.__getitem__)
    fastest = min(medians, key=medians.__getitem__)
    each = ", ".join(f"{kind} {ms:.1f}" for kind, ms in medians.items())
    return Figure(
        name="auth POST /v1/auth/signup answer, slowest kind of address, floor off",
        goal="<= 1.1x the fastest kind",
        measured=medians[slowest],
        unit=f"ms ({slowest})",
        met=medians[slowest] <= 1.1 * medians[fastest],
        floor=medians[fastest],
        floor_label=f"the fastest kind, {fastest}; medians {each} ms",
    )
