"""The whole system on one machine: embedded broker, SMTP sink, auth, films and mailer.

`python -m infra.stack` (run by infra/up.sh). Every service is a separate process, configured
only by environment variables, exactly as in production. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from infra.broker import EmbeddedBroker
from infra.ports import wait_for_port
from infra.smtp_sink import start_sink

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"auth": "auth_service", "films": "films_service", "mailer": "mailer_service"}
COLOURS = {"auth": "\033[36m", "films": "\033[35m", "mailer": "\033[33m"}


def say(text: str) -> None:
    print(f"\033[1m[stack]\033[0m {text}", flush=True)


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    colour = COLOURS[name] if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    async for line in stream:
        print(f"{colour}[{name:6}]{reset} {line.decode(errors='replace').rstrip()}", flush=True)


async def main() -> int:
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    if "KAFKA_BOOTSTRAP_SERVERS" not in env:
        broker = EmbeddedBroker(port=int(env.get("STACK_BROKER_PORT", "9092"))).start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        say(f"embedded Kafka-protocol broker (Tansu) on {broker.bootstrap_servers}")

    smtp_host = env.setdefault("MAILER_SMTP_HOST", "127.0.0.1")
    smtp_port = int(env.setdefault("MAILER_SMTP_PORT", "1025"))
    maildir = ROOT / "var" / "mail"
    sink = start_sink(smtp_host, smtp_port, maildir)
    say(f"SMTP sink on {smtp_host}:{smtp_port}; emails are printed here and kept in {maildir}")

    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    try:
        for name, module in SERVICES.items():
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches only this runner, which then
                # stops the services before the broker they need to shut down cleanly.
                start_new_session=True,
            )
            procs[name] = proc
            assert proc.stdout is not None
            pumps.append(asyncio.create_task(_pump(name, proc.stdout)))
        for name, port in (
            ("auth", env.get("AUTH_PORT", "8000")),
            ("films", env.get("FILMS_PORT", "8001")),
            ("mailer", env.get("MAILER_PORT", "8002")),
        ):
            await asyncio.to_thread(wait_for_port, "127.0.0.1", int(port), 60)
            say(f"{name} is up on http://127.0.0.1:{port}")
        say("ready: follow the README's walk-through. Ctrl-C stops everything.")

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        exited = [asyncio.create_task(p.wait()) for p in procs.values()]
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), *exited], return_when=asyncio.FIRST_COMPLETED
        )
        if not stop.is_set():
            say("a service exited; stopping the stack")
            return 1
        return 0
    finally:
        say("stopping")
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        sink.stop()
        if broker is not None:
            broker.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
