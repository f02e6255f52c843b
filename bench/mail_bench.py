"""Mail benchmark: topic → SMTP throughput, and sign-up → inbox latency at a steady rate.

    .venv/bin/python -m bench.mail_bench [--emails 5000] [--rate 50] [--seconds 10]

Everything runs on this machine, each part in its own process: the embedded broker, an
SMTP sink (bench/sink.py, stamps each arrival), the mailer and, for latency, auth.
  * throughput: N events are on the topic before the mailer starts; emails/s from the
    first to the last arrival at the sink (goal >= 1,000/s). Baseline in the same run:
    the same rendered emails sent straight to the same sink with the same number of SMTP
    connections (no Kafka, no database): the ratio is what the pipeline costs.
  * latency: sign-ups at a steady rate (default 50/s) through auth's HTTP API; from the
    request to the email's arrival (goal p50 <= 100 ms, p99 <= 300 ms), beside the
    sign-up's own HTTP answer time as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from bench.common import LightClient, cpu_seconds, key_material, machine, percentile, workdir
from common.events import EMAIL_CODES_TOPIC, EmailCodeEvent, EmailEventType
from common.kafka import KafkaSettings, ensure_topics, make_producer
from infra.broker import EmbeddedBroker
from infra.ports import free_port, wait_for_port
from mailer_service.config import MailerSettings
from mailer_service.smtp import SmtpPool
from mailer_service.templates import render
from tests.support import ServiceProcess


class Sink:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.path = work / "arrivals.txt"
        self.path.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(self.port), str(self.path)]
        )
        wait_for_port("127.0.0.1", self.port, 30)

    def arrivals(self, prefix: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in self.path.read_text().splitlines():
            stamp, _, rcpt = line.partition(" ")
            if rcpt.startswith(prefix):
                found.setdefault(rcpt, float(stamp))
        return found

    async def wait(self, prefix: str, count: int, limit: float) -> dict[str, float]:
        deadline = time.monotonic() + limit
        while len(got := self.arrivals(prefix)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} emails arrived")
            await asyncio.sleep(0.2)
        return got

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def events(prefix: str, n: int) -> list[EmailCodeEvent]:
    return [
        EmailCodeEvent(
            type=EmailEventType.EMAIL_VERIFICATION, email=f"{prefix}{i}@example.com", code="123456"
        )
        for i in range(n)
    ]


async def direct_smtp_rate(settings: MailerSettings, sink: Sink, n: int) -> float:
    """Baseline: rendered emails straight to the sink over the same number of connections."""
    prefix = f"direct-{uuid.uuid4().hex[:6]}-"
    messages = [render(e, sender=settings.sender, product="Bench") for e in events(prefix, n)]
    pool = SmtpPool(settings)
    queue = list(reversed(messages))

    async def worker() -> None:
        while queue:
            await pool.send(queue.pop())

    try:
        await asyncio.gather(*(worker() for _ in range(settings.smtp_connections)))
        arrived = await sink.wait(prefix, n, 60)
    finally:
        await pool.close()
    stamps = sorted(arrived.values())
    return (n - 1) / (stamps[-1] - stamps[0])


async def publish(kafka: KafkaSettings, batch: list[EmailCodeEvent]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        futures = [await producer.send(EMAIL_CODES_TOPIC, e.to_bytes(), key=e.key) for e in batch]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def mailer_rate(
    env: dict[str, str],
    work: Path,
    kafka: KafkaSettings,
    sink: Sink,
    n: int,
    connections: int,
    processes: int = 1,
) -> tuple[float, float]:
    """(emails/s, mailer CPU ms per email) for `n` events published once `processes`
    mailers (one group, one database) all consume."""
    prefix = f"queued-{uuid.uuid4().hex[:6]}-"
    shared = {
        **env,
        "MAILER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
        "MAILER_DATABASE_URL": f"sqlite+aiosqlite:///{work}/mailer-{prefix}.db",
        "MAILER_SMTP_CONNECTIONS": str(connections),
    }
    mailers = [
        ServiceProcess("mailer_service", "MAILER_PORT", shared, work, f"mailer-{connections}-{i}")
        for i in range(processes)
    ]
    try:
        for mailer in mailers:
            mailer.start()
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            for mailer in mailers:  # every member has joined the group: no rebalance mid-run
                while (await http.get(f"{mailer.url}/readyz")).status_code != 200:
                    if time.monotonic() > deadline:
                        raise TimeoutError("mailers did not become ready")
                    await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        pids = [m.process.pid for m in mailers if m.process is not None]
        cpu = sum(cpu_seconds(pid) for pid in pids)
        await publish(kafka, events(prefix, n))
        arrived = await sink.wait(prefix, n, 300)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    finally:
        for mailer in mailers:
            mailer.stop()
    stamps = sorted(arrived.values())
    return (n - 1) / (stamps[-1] - stamps[0]), cpu / n * 1000


async def signup_latency(
    env: dict[str, str], work: Path, sink: Sink, rate: float, seconds: float
) -> tuple[list[float], list[float], list[float]]:
    """(request → inbox, request → 202, 202 → inbox) in ms for sign-ups at a steady `rate`."""
    mailer = ServiceProcess(
        "mailer_service",
        "MAILER_PORT",
        {**env, "MAILER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}"},
        work,
        "mailer-latency",
    ).start()
    auth = ServiceProcess("auth_service", "AUTH_PORT", env, work).start()
    prefix = f"signup-{uuid.uuid4().hex[:6]}-"
    host, port = "127.0.0.1", auth.port
    idle: asyncio.Queue[LightClient] = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(LightClient(host, port))
    sent: dict[str, float] = {}
    answered_at: dict[str, float] = {}
    answered: list[float] = []

    async def signup(email: str) -> None:
        client = await idle.get()
        try:
            body = json.dumps({"email": email, "password": "benchmark passphrase"}).encode()
            sent[email] = time.time()
            status, payload = await client.request("POST", "/v1/auth/signup", body)
            assert status == 202, payload
            answered_at[email] = time.time()
            answered.append((answered_at[email] - sent[email]) * 1000)
        finally:
            idle.put_nowait(client)

    try:
        # Warm up: the mailer joins its group, auth's relay connects.
        warm = f"{prefix}warm@example.com"
        await signup(warm)
        await sink.wait(warm, 1, 60)
        answered.clear()
        for _ in range(idle.qsize()):  # fresh connections: uvicorn closes idle ones after 5 s
            client = idle.get_nowait()
            await client.close()
            idle.put_nowait(client)
        n = int(rate * seconds)
        emails = [f"{prefix}{i}@example.com" for i in range(n)]
        assert auth.process is not None
        auth_cpu = cpu_seconds(auth.process.pid)
        started = time.monotonic()
        tasks = []
        for i, email in enumerate(emails):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(signup(email)))
        await asyncio.gather(*tasks)
        auth_cpu = cpu_seconds(auth.process.pid) - auth_cpu
        print(
            f"  auth used {auth_cpu / n * 1000:.0f} ms CPU per sign-up (argon2id m=19 MiB t=2), "
            f"{auth_cpu / (time.monotonic() - started):.2f} of {os.cpu_count()} cores at this rate"
        )
        arrived = await sink.wait(prefix, n + 1, 60)
    finally:
        while not idle.empty():
            await idle.get_nowait().close()
        auth.stop()
        mailer.stop()
    return (
        [(arrived[e] - sent[e]) * 1000 for e in emails],
        answered,
        [(arrived[e] - answered_at[e]) * 1000 for e in emails],
    )


async def topic_latency(
    env: dict[str, str], work: Path, kafka: KafkaSettings, sink: Sink, rate: float, seconds: float
) -> list[float]:
    """Publish → inbox in ms for events put straight on the topic at a steady `rate`: the
    mail path alone, without auth's password hashing competing for the cores."""
    mailer = ServiceProcess(
        "mailer_service",
        "MAILER_PORT",
        {**env, "MAILER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}"},
        work,
        "mailer-topic-latency",
    ).start()
    producer = make_producer(kafka)
    await producer.start()
    prefix = f"direct-latency-{uuid.uuid4().hex[:6]}-"
    try:
        warm = events(f"{prefix}warm", 1)
        await producer.send_and_wait(EMAIL_CODES_TOPIC, warm[0].to_bytes(), key=warm[0].key)
        await sink.wait(f"{prefix}warm", 1, 60)
        batch = events(prefix, int(rate * seconds))
        sent: dict[str, float] = {}
        started = time.monotonic()
        for i, event in enumerate(batch):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            sent[event.email] = time.time()
            await producer.send(EMAIL_CODES_TOPIC, event.to_bytes(), key=event.key)
        arrived = await sink.wait(prefix, len(batch) + 1, 60)
    finally:
        await producer.stop()
        mailer.stop()
    return [(arrived[e] - t) * 1000 for e, t in sent.items()]


def line(label: str, values: list[float]) -> str:
    return (
        f"{label} p50 {percentile(values, 50):6.1f} ms  p99 {percentile(values, 99):6.1f} ms  "
        f"(n={len(values)})"
    )


async def run(args: argparse.Namespace) -> None:
    work = workdir()
    keys = key_material(work)
    sink = Sink(work)
    print(f"machine: {machine()}")
    env = {
        **os.environ,
        "MAILER_SMTP_PORT": str(sink.port),
        "MAILER_DATABASE_URL": f"sqlite+aiosqlite:///{work}/mailer.db",
        "MAILER_PUBLIC_KEY_PATH": str(keys.public_key_path),
        "AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{work}/auth.db",
        "AUTH_PRIVATE_KEY_PATH": str(keys.private_key_path),
        "AUTH_PUBLIC_KEY_PATH": str(keys.public_key_path),
        "AUTH_CODE_SECRET_PATH": str(keys.code_secret_path),
        "AUTH_RATE_LIMIT_ENABLED": "false",
    }
    try:
        for connections in args.connections:
            # A broker per phase: a new group starts from the earliest offset, and must
            # not find the previous phase's emails waiting.
            with EmbeddedBroker() as broker:
                kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
                await ensure_topics(kafka, EMAIL_CODES_TOPIC)
                phase = {**env, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
                settings = MailerSettings(smtp_port=sink.port, smtp_connections=connections)
                direct = await direct_smtp_rate(settings, sink, args.emails)
                rate, cpu = await mailer_rate(
                    phase, work, kafka, sink, args.emails, connections, args.processes
                )
            print(
                f"throughput, {args.processes} mailer(s) x {connections} SMTP connection(s): "
                f"{rate:5.0f} emails/s ({cpu:.2f} ms CPU each; goal >= 1000/s); "
                f"direct SMTP baseline {direct:5.0f}/s; ratio {rate / direct:.2f}"
            )
        with EmbeddedBroker() as broker:
            phase = {**env, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
            await ensure_topics(
                KafkaSettings(bootstrap_servers=broker.bootstrap_servers), EMAIL_CODES_TOPIC
            )
            inbox, answer, after = await signup_latency(phase, work, sink, args.rate, args.seconds)
        with EmbeddedBroker() as broker:
            phase = {**env, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            await ensure_topics(kafka, EMAIL_CODES_TOPIC)
            direct = await topic_latency(phase, work, kafka, sink, args.rate, args.seconds)
        print(f"latency at {args.rate:.0f} sign-ups/s for {args.seconds:.0f} s:")
        print(line("  request -> inbox:   ", inbox) + "  (goal p50 <= 100, p99 <= 300)")
        print(line("  baseline, -> 202:   ", answer) + "  (argon2id hashing, queued)")
        print(line("  202 -> inbox:       ", after) + "  (outbox, Kafka, mailer, SMTP)")
        print(line("  topic -> inbox:     ", direct) + "  (events published directly, no auth)")
    finally:
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--processes", type=int, default=1, help="mailer processes, one group")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
