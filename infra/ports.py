from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

# Below the kernel's ephemeral range. A port the kernel hands out (bind to 0) lies in it,
# where any outgoing connection may take it before the server binds, and where a client
# polling the port before the server is up can even connect to itself (Linux's
# self-connect: source port = destination port), which then holds it. Both happened in CI
# (a mailer of the production-topology test could not bind). Ports below that range are
# taken only by servers that ask for them.
LOWEST = 10_000
_given: set[int] = set()
_random = random.SystemRandom()  # not the module's state, which a test may seed


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _span() -> range:
    """Where to pick: the range below the ephemeral one, or, in a pytest-xdist worker, the
    worker's own share of it, so that two workers starting services at the same moment
    never pick the same port."""
    low, top = LOWEST, _ephemeral_start()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if worker[2:].isdigit() and 0 <= int(worker[2:]) < count:
        share = (top - low) // count
        low += int(worker[2:]) * share
        top = low + share
    return range(low, top)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on, from below the ephemeral range where it can, and never
    the same one twice in a process."""
    span = _span()
    for _ in range(200) if len(span) > 1_000 else ():
        port = _random.choice(span)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
