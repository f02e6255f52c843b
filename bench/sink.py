"""An SMTP sink for benchmarks, run as its own process so it does not share the load
generator's interpreter: `python -m bench.sink PORT FILE` appends `epoch-seconds rcpt` per
accepted message to FILE."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class Stamper:
    def __init__(self, path: str) -> None:
        self._out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        for rcpt in envelope.rcpt_tos:
            self._out.write(f"{now:.6f} {rcpt}\n")
        return "250 OK"


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Stamper(path), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
