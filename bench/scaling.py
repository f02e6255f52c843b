"""Scaling through the gateway: refreshes and logins a second with one auth instance and
with two, on PostgreSQL, in alternating rounds of the same run. The two instances are
pinned one to each core; one gateway routes to the first only, another to both, and both
gateways and wrk run on the second core (a two-core machine has no third for them)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

from bench.auth import refresh_tokens, seed_users
from bench.harness import (
    CORES,
    LOAD_CORE,
    Figure,
    Load,
    alternate,
    median,
    pin,
    wrk,
)
from infra import gateway
from infra.ports import free_port, wait_for_port
from infra.topology import GATEWAY_SOURCE, Topology


def figures(work: Path, env: dict[str, str], rounds: int, seconds: float) -> list[Figure]:
    run = uuid.uuid4().hex[:6]
    topology = Topology(
        workdir=work / "scaling",
        env={**env, "AUTH_RATE_LIMIT_ENABLED": "false", "AUTH_REDIS_KEY_PREFIX": f"bench-{run}"},
        production=True,
        instances=2,
        gateway_port=free_port(),
        database_prefix=f"bench_{run}",
        only=("auth",),
    )
    single: subprocess.Popen[bytes] | None = None
    try:
        topology.start()
        first, second = topology.services["auth"]
        for instance, core in ((first, CORES[0]), (second, CORES[-1])):
            assert instance.process is not None
            pin(instance.process.pid, core)
        assert topology.nginx is not None
        pin(topology.nginx.pid, LOAD_CORE)
        port = free_port()
        single = gateway.start(
            gateway.Gateway(
                listen=f"127.0.0.1:{port}",
                upstreams={"auth": [f"127.0.0.1:{first.port}"]},
                workdir=work / "gateway-one",
                source_address=GATEWAY_SOURCE,
            ),
            cpu=LOAD_CORE,
        )
        wait_for_port("127.0.0.1", port, 10)
        urls = {"one": f"http://127.0.0.1:{port}", "two": topology.gateway_url}
        emails = asyncio.run(seed_users(topology.base_env["AUTH_DATABASE_URL"]))
        users = work / "scaling-users.txt"
        users.write_text("\n".join(emails) + "\n")
        tokens = work / "scaling-tokens.txt"

        def refresh(url: str) -> float:
            tokens.write_text("\n".join(asyncio.run(refresh_tokens(url, emails))) + "\n")
            args = (str(tokens),)
            load: Load = wrk(url, seconds=seconds, script="refresh.lua", script_args=args)
            return load.rate

        def login(url: str) -> float:
            args = (str(users),)
            return wrk(
                url, seconds=seconds, connections=8, script="login.lua", script_args=args
            ).rate

        rates = alternate(
            rounds,
            {
                "refresh one": lambda: refresh(urls["one"]),
                "refresh two": lambda: refresh(urls["two"]),
                "login one": lambda: login(urls["one"]),
                "login two": lambda: login(urls["two"]),
            },
        )
    finally:
        if single is not None:
            single.terminate()
            single.wait()
        topology.stop()
        topology.drop_databases()
    result = []
    for what, goal in (("refresh", 1.6), ("login", None)):
        one, two = median(rates[f"{what} one"]), median(rates[f"{what} two"])
        result.append(
            Figure(
                name=f"gateway: {what}, two auth instances",
                goal=f">= {goal}x one instance" if goal else "(reported)",
                measured=two,
                unit="req/s",
                met=goal is None or two >= goal * one,
                floor=one,
                floor_label="the same through one instance",
                rounds=rates[f"{what} two"],
            )
        )
    return result
