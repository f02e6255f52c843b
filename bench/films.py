"""Films: a protected read against the same process's /healthz (the floor: what the
framework costs with no work at all), by id and as a page of twenty."""

from __future__ import annotations

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
from tests.support import Minter

ROUTES = {"healthz": "/healthz", "by id": "/v1/films/7", "page of 20": "/v1/films?limit=20"}
GOALS = {"by id": 0.5, "page of 20": 0.3}


def figures(
    work: Path, env: dict[str, str], database_url: str, rounds: int, seconds: float
) -> tuple[list[Figure], dict[str, float]]:
    films_env = {**env, "FILMS_DATABASE_URL": database_url}
    films = start_pinned(ServiceProcess("films_service", "FILMS_PORT", films_env, work, "films"))
    assert films.process is not None
    memory = {"films idle": resident_mb(films.process.pid)}
    token = Minter(Path(env["AUTH_PRIVATE_KEY_PATH"]).parent).token()
    bearer = {"Authorization": f"Bearer {token}"}

    def load(path: str) -> Callable[[], Load]:
        def measure() -> Load:
            return wrk(films.url + path, seconds=seconds, headers=bearer)

        return measure

    try:
        for path in ROUTES.values():  # warm up: first queries, caches, connections
            wrk(films.url + path, seconds=1, headers=bearer)
        loads = alternate(rounds, {name: load(path) for name, path in ROUTES.items()})
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
    return result, memory
