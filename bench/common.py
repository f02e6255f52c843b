"""Shared pieces of the benchmarks: a real auth process on free ports, timing helpers."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from auth_service.config import AuthSettings
from auth_service.keys import generate_missing


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 99):.1f} ms "
        f"(n={len(values)})"
    )


async def run_for(
    seconds: float, workers: int, one: Callable[[int], Awaitable[None]]
) -> tuple[int, float]:
    """Call `one(worker)` in `workers` loops for `seconds`; (calls completed, elapsed)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(worker: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await one(worker)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    return done, time.perf_counter() - started


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of a process (default: this one), from /proc."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-"))


def key_material(directory: Path) -> AuthSettings:
    """Auth settings whose key pair and code secret are freshly generated in `directory`."""
    settings = AuthSettings(
        private_key_path=directory / "private.pem",
        public_key_path=directory / "public.pem",
        code_secret_path=directory / "code_secret",
    )
    generate_missing(settings)
    return settings


def machine() -> str:
    return f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


class LightClient:
    """A minimal HTTP/1.1 keep-alive client for load generation.

    On a 2-core machine the load generator competes with the server for CPU; httpx spends
    about 1 ms of CPU a request, this about a tenth of that, so the server gets the cores.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: str = ""
    ) -> tuple[int, bytes]:
        """`headers`: extra header lines, each ending in CRLF."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self._reader.readuntil(b"\r\n")
        length = 0
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self._reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
