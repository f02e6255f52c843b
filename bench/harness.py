"""The benchmarks' method: pinned cores, wrk, alternating rounds, medians.

The machine has two cores. The service under test runs on SERVICE_CORE and everything
that serves it a load (wrk, the broker, the SMTP sink, this process) on LOAD_CORE, so a
figure is what one core of service gives, not what is left after the load generator took
its share. Every figure is the median of several rounds, alternated with its floor (the
baseline it is compared to), measured in the same run on the same core: these machines are
shared and noisy, and a ratio of two neighbours survives that where an absolute rate does
not.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from auth_service.config import AuthSettings
from auth_service.keys import generate_missing
from infra.processes import ServiceProcess

CORES = sorted(os.sched_getaffinity(0))
SERVICE_CORE = CORES[0]
LOAD_CORE = CORES[-1]  # the same core on a one-core machine: then the figures say so
LUA = Path(__file__).parent / "lua"
T = TypeVar("T")


def pin(pid: int, core: int) -> None:
    """Every thread of `pid` (and any it starts later) on `core`."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True
    )


def pin_self() -> None:
    """This process (the load side) on LOAD_CORE."""
    os.sched_setaffinity(0, {LOAD_CORE})


def start_pinned(service: ServiceProcess, core: int = SERVICE_CORE) -> ServiceProcess:
    """Started on `core` (taskset execs the service: the pid is the service's)."""
    service.cpu = core
    return service.start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-"))


def key_material(directory: Path, **overrides: Any) -> AuthSettings:
    """Auth settings (the defaults, or `overrides`) whose key pair and code secret are
    freshly generated in `directory`."""
    settings = AuthSettings(
        private_key_path=directory / "private.pem",
        public_key_path=directory / "public.pem",
        code_secret_path=directory / "code_secret",
        retired_keys_dir=directory / "retired",
        **overrides,
    )
    generate_missing(settings)
    return settings


def key_env(settings: AuthSettings) -> dict[str, str]:
    return {
        "AUTH_PRIVATE_KEY_PATH": str(settings.private_key_path),
        "AUTH_PUBLIC_KEY_PATH": str(settings.public_key_path),
        "AUTH_CODE_SECRET_PATH": str(settings.code_secret_path),
        "AUTH_RETIRED_KEYS_DIR": str(settings.retired_keys_dir),
        "FILMS_PUBLIC_KEY_PATH": str(settings.public_key_path),
        "MAILER_PUBLIC_KEY_PATH": str(settings.public_key_path),
    }


# -- wrk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One wrk run's result: throughput and latency percentiles (ms)."""

    rate: float
    p50: float
    p90: float
    p99: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
SOCKET_ERRORS = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"


def _find(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.M)
    if found is None:
        raise ValueError(f"wrk said something unexpected (no {pattern!r}):\n{text}")
    return found


def _ms(text: str) -> float:
    number, unit = _find(r"^([\d.]+)(us|ms|s|m)$", text.strip()).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    rate = float(_find(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.M))
    requests = int(_find(r"(\d+) requests in", output).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Load(
        rate,
        _ms(percentiles["50"]),
        _ms(percentiles["90"]),
        _ms(percentiles["99"]),
        requests,
        errors,
    )


def middle(loads: list[Load]) -> Load:
    """The round whose rate is the median: its latency percentiles go to the chart."""
    return sorted(loads, key=lambda load: load.rate)[len(loads) // 2]


def errors_note(loads: list[Load]) -> str:
    errors = sum(load.errors for load in loads)
    return f"{errors} errors in {sum(load.requests for load in loads)} requests" if errors else ""


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 16,
    script: str | None = None,
    script_args: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> Load:
    """wrk on LOAD_CORE, one thread (a Lua script's state is per thread)."""
    command = ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}"]
    command += [f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(LUA / script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


# -- rounds and figures -----------------------------------------------------------------


def alternate(rounds: int, measures: dict[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Each measure once per round, in turn, `rounds` times: neighbours in time share
    whatever the machine was doing then."""
    results: dict[str, list[T]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
            time.sleep(0.5)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Figure:
    """One line of the results table."""

    name: str
    goal: str
    measured: float
    unit: str
    met: bool
    floor: float | None = None
    floor_label: str = ""
    rounds: list[float] = field(default_factory=list)
    note: str = ""
    latency: Load | None = None  # percentiles for the chart, where there are any

    @property
    def ratio(self) -> float | None:
        return self.measured / self.floor if self.floor else None
