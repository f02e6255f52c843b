"""Films benchmark: what offline token verification costs a protected read.

    .venv/bin/python -m bench.films_bench [--seconds 6] [--rounds 3]

Two films processes, identical but for authentication: `GET /v1/films/{id}` with a
Bearer token checked offline (RS256, the public key only), and the same handler with the
token dependency replaced by fixed claims (the baseline). They are measured in
alternating rounds in the same run; the figure is the ratio of requests/s (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

from bench.common import LightClient, key_material, machine, run_for, workdir
from tests.support import Minter, ServiceProcess


async def rate(url: str, seconds: float, workers: int, headers: str) -> float:
    host, port = url.removeprefix("http://").split(":")
    clients = [LightClient(host, int(port)) for _ in range(workers)]

    async def one(worker: int) -> None:
        status, payload = await clients[worker].request("GET", "/v1/films/7", headers=headers)
        assert status == 200, payload

    try:
        for worker in range(workers):
            await one(worker)  # connect, warm up
        done, elapsed = await run_for(seconds, workers, one)
    finally:
        for client in clients:
            await client.close()
    return done / elapsed


async def run(args: argparse.Namespace) -> None:
    work = workdir()
    keys = key_material(work)
    token = Minter(work).token()
    env = {**os.environ, "FILMS_PUBLIC_KEY_PATH": str(keys.public_key_path)}
    servers = {
        name: ServiceProcess(
            "bench.films_server",
            "FILMS_PORT",
            {**env, "FILMS_DATABASE_URL": f"sqlite+aiosqlite:///{work}/{i}.db", **extra},
            work,
            f"films-{i}",
        )
        for i, (name, extra) in enumerate((("protected", {}), ("no auth", {"BENCH_NO_AUTH": "1"})))
    }
    print(f"machine: {machine()}; {args.rounds} alternating rounds of {args.seconds:.0f} s")
    try:
        for server in servers.values():
            server.start()
        rates: dict[str, list[float]] = {name: [] for name in servers}
        headers = {"protected": f"Authorization: Bearer {token}\r\n", "no auth": ""}
        for _ in range(args.rounds):
            for name, server in servers.items():
                rates[name].append(await rate(server.url, args.seconds, 8, headers[name]))
    finally:
        for server in servers.values():
            server.stop()
    protected, baseline = (statistics.median(rates[n]) for n in ("protected", "no auth"))
    rounds = {name: ", ".join(f"{r:.0f}" for r in values) for name, values in rates.items()}
    print(
        f"GET /v1/films/{{id}} with RS256 bearer: {protected:7.0f} req/s  ({rounds['protected']})"
    )
    print(f"same handler, no authentication:      {baseline:7.0f} req/s  ({rounds['no auth']})")
    print(f"ratio protected / unauthenticated:    {protected / baseline:.2f} (goal >= 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
