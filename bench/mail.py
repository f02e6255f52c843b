"""The mail path: emails a second from the topic to an SMTP sink, against the same emails
sent straight to the same sink by a bare loop (the floor), each on the service's core;
and sign-up → inbox latency at half the most sign-ups a second auth takes."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from bench.bare_smtp import events
from bench.harness import (
    LOAD_CORE,
    SERVICE_CORE,
    Figure,
    alternate,
    median,
    pin,
    start_pinned,
)
from common.events import EMAIL_CODES_TOPIC
from common.kafka import KafkaSettings, make_producer
from common.memory import resident_mb
from infra.ports import free_port, wait_for_port
from infra.processes import ROOT, ServiceProcess

EMAILS = 3000  # a round of the throughput figure
CONNECTIONS = 4  # MAILER_SMTP_CONNECTIONS' default, for the mailer and the floor alike


class Sink:
    """bench/sink.py on the load core: stamps every arrival (epoch seconds, recipient)."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.path = work / "arrivals.txt"
        self.path.touch()
        command = [sys.executable, "-m", "bench.sink", str(self.port), str(self.path)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        pin(self.process.pid, LOAD_CORE)
        wait_for_port("127.0.0.1", self.port, 30)

    def arrivals(self, prefix: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in self.path.read_text().splitlines():
            stamp, _, rcpt = line.partition(" ")
            if rcpt.startswith(prefix):
                found.setdefault(rcpt, float(stamp))
        return found

    def wait(self, prefix: str, count: int, limit: float = 300) -> dict[str, float]:
        deadline = time.monotonic() + limit
        while len(got := self.arrivals(prefix)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} emails arrived")
            time.sleep(0.1)
        return got

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def _rate(arrived: dict[str, float]) -> float:
    stamps = sorted(arrived.values())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def _publish(kafka: KafkaSettings, prefix: str, count: int) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        sends = [
            await producer.send(EMAIL_CODES_TOPIC, e.to_bytes(), key=e.key)
            for e in events(prefix, count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def throughput(
    work: Path, env: dict[str, str], database_url: str, sink: Sink, rounds: int
) -> tuple[Figure, dict[str, float]]:
    mailer_env = {
        **env,
        "MAILER_DATABASE_URL": database_url,
        "MAILER_SMTP_PORT": str(sink.port),
        "MAILER_SMTP_CONNECTIONS": str(CONNECTIONS),
        "MAILER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
    }
    mailer = start_pinned(
        ServiceProcess("mailer_service", "MAILER_PORT", mailer_env, work, "mailer")
    )
    assert mailer.process is not None
    mailer.wait_healthy(60, "/readyz")  # joined its group: no rebalance in the middle
    memory = {"mailer idle": resident_mb(mailer.process.pid)}
    kafka = KafkaSettings(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])

    def bare() -> float:
        prefix = f"bare-{uuid.uuid4().hex[:6]}-"
        command = ["taskset", "-c", str(SERVICE_CORE), sys.executable, "-m", "bench.bare_smtp"]
        args = [str(sink.port), str(EMAILS), str(CONNECTIONS), prefix]
        subprocess.run([*command, *args], cwd=ROOT, check=True)
        return _rate(sink.wait(prefix, EMAILS))

    def through_the_mailer() -> float:
        prefix = f"mailer-{uuid.uuid4().hex[:6]}-"
        asyncio.run(_publish(kafka, prefix, EMAILS))
        return _rate(sink.wait(prefix, EMAILS))

    try:
        rates = alternate(rounds, {"bare": bare, "mailer": through_the_mailer})
        memory["mailer after load"] = resident_mb(mailer.process.pid)
    finally:
        mailer.stop()
    floor, measured = median(rates["bare"]), median(rates["mailer"])
    figure = Figure(
        name="mail: topic to SMTP sink",
        goal=">= 0.8x bare aiosmtplib",
        measured=measured,
        unit="emails/s",
        met=measured >= 0.8 * floor,
        floor=floor,
        floor_label="the same emails, bare aiosmtplib loop, same core",
        rounds=rates["mailer"],
    )
    return figure, memory


async def _steady_signups(url: str, rate: float, seconds: float, tag: str) -> dict[str, float]:
    """Sign-ups at a steady `rate` (open loop); when each was sent, by recipient."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        tasks = []
        for i in range(int(rate * seconds)):
            email = f"{tag}{i}@example.com"
            sent[email] = time.time()
            body = {"email": email, "password": "benchmark passphrase"}
            tasks.append(asyncio.create_task(http.post("/v1/auth/signup", json=body)))
            await asyncio.sleep(1 / rate)
        answers = await asyncio.gather(*tasks)
    assert all(a.status_code == 202 for a in answers)
    return sent


def latency(
    work: Path,
    env: dict[str, str],
    databases: dict[str, str],
    sink: Sink,
    rate: float,
    rounds: int,
    seconds: float,
) -> Figure:
    """Sign-up request → inbox, at `rate`, with auth and the mailer on the service core."""
    shared = {
        **env,
        "AUTH_DATABASE_URL": databases["auth"],
        "AUTH_RATE_LIMIT_ENABLED": "false",
        "MAILER_DATABASE_URL": databases["mailer"],
        "MAILER_SMTP_PORT": str(sink.port),
        "MAILER_GROUP_ID": f"latency-{uuid.uuid4().hex[:6]}",
    }
    auth = start_pinned(ServiceProcess("auth_service", "AUTH_PORT", shared, work, "auth-latency"))
    mailer = start_pinned(
        ServiceProcess("mailer_service", "MAILER_PORT", shared, work, "mailer-latency")
    )
    mailer.wait_healthy(60, "/readyz")
    samples: list[tuple[float, float]] = []

    def one_round() -> tuple[float, float]:
        tag = f"latency-{uuid.uuid4().hex[:6]}-"
        sent = asyncio.run(_steady_signups(auth.url, rate, seconds, tag))
        arrived = sink.wait(tag, len(sent), 120)
        ms = sorted((arrived[e] - sent[e]) * 1000 for e in sent)
        return statistics.median(ms), ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]

    try:
        one_round()  # warm-up: connections, the first group join, caches
        samples = alternate(rounds, {"latency": one_round})["latency"]
    finally:
        auth.stop()
        mailer.stop()
    p50 = median([s[0] for s in samples])
    p99 = median([s[1] for s in samples])
    return Figure(
        name=f"sign-up request to inbox at {rate:.0f}/s",
        goal="p50 <= 100 ms, p99 <= 300 ms",
        measured=p50,
        unit="ms (p50)",
        met=p50 <= 100 and p99 <= 300,
        note=f"p99 {p99:.0f} ms",
        rounds=[s[0] for s in samples],
    )
