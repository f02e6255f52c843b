"""Films: a protected read against the same process's /healthz (the floor: what the
framework costs with no work at all), by id and as a page of twenty; and by id with a
token bound to the client's key (DPoP), a new proof each request."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from bench.harness import (
    Figure,
    Load,
    alternate,
    errors_note,
    median,
    middle,
    start_pinned,
    wrk,
)
from common.memory import resident_mb
from infra.processes import ServiceProcess
from tests.dpop_keys import ProofKey
from tests.support import Minter

ROUTES = {"healthz": "/healthz", "by id": "/v1/films/7", "page of 20": "/v1/films?limit=20"}
GOALS = {"by id": 0.5, "page of 20": 0.3}
BOUND = "by id, DPoP"


def figures(
    work: Path, env: dict[str, str], database_url: str, rounds: int, seconds: float
) -> tuple[list[Figure], dict[str, float]]:
    films_env = {**env, "FILMS_DATABASE_URL": database_url}
    films = start_pinned(ServiceProcess("films_service", "FILMS_PORT", films_env, work, "films"))
    assert films.process is not None
    memory = {"films idle": resident_mb(films.process.pid)}
    minter = Minter(Path(env["AUTH_PRIVATE_KEY_PATH"]).parent)
    bearer = {"Authorization": f"Bearer {minter.token()}"}
    key = ProofKey()
    bound = minter.token(cnf={"jkt": key.jkt})
    proofs = work / "proofs.txt"
    ceiling = 0.0  # requests a second the round of proofs is signed for

    def load(path: str) -> Callable[[], Load]:
        def measure() -> Load:
            return wrk(films.url + path, seconds=seconds, headers=bearer)

        return measure

    def dpop() -> Load:
        """Signed before wrk starts (on this, the load core), each good for a minute: wrk
        cannot sign, and signing as it goes would measure the client."""
        url = films.url + ROUTES["by id"]
        count = math.ceil(ceiling * 1.5 * max(1, round(seconds)))
        proofs.write_text("".join(key.proof("GET", url, bound) + "\n" for _ in range(count)))
        return wrk(url, seconds=seconds, script="dpop.lua", script_args=(str(proofs), bound))

    try:
        for path in ROUTES.values():  # warm up: first queries, caches, connections
            ceiling = max(ceiling, wrk(films.url + path, seconds=1, headers=bearer).rate)
        dpop()
        loads = alternate(
            rounds, {**{name: load(path) for name, path in ROUTES.items()}, BOUND: dpop}
        )
        memory["films after load"] = resident_mb(films.process.pid)
    finally:
        films.stop()
    floor = median([load.rate for load in loads["healthz"]])
    result = []
    for name, goal in GOALS.items():
        rates = [load.rate for load in loads[name]]
        result.append(
            Figure(
                name=f"films GET {ROUTES[name]}",
                goal=f">= {goal}x /healthz",
                measured=median(rates),
                unit="req/s",
                met=median(rates) >= goal * floor,
                floor=floor,
                floor_label="the same process's /healthz",
                rounds=rates,
                latency=middle(loads[name]),
                note=errors_note(loads[name]),
            )
        )
    rates = [load.rate for load in loads[BOUND]]
    bearer_rate = median([load.rate for load in loads["by id"]])
    result.append(
        Figure(
            name=f"films GET {ROUTES['by id']}, DPoP-bound token, a new proof each request",
            goal="(report)",
            measured=median(rates),
            unit="req/s",
            met=True,
            floor=floor,
            floor_label="the same process's /healthz",
            rounds=rates,
            latency=middle(loads[BOUND]),
            note="; ".join(
                n
                for n in (
                    f"{median(rates) / bearer_rate:.2f}x of the Bearer read",
                    errors_note(loads[BOUND]),
                )
                if n
            ),
        )
    )
    return result, memory
