from __future__ import annotations

import random
import socket
import time
from pathlib import Path

# Below the kernel's ephemeral range: a port the system hands out (bind to 0) may be taken
# again, by any process's outgoing connection, between our pick and the server's bind (a
# mailer of the production-topology test once failed to start so). Ports of this range
# are only ever taken by servers asking for them.
LOWEST = 10_000
_given: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on, from outside the ephemeral range where it can, and never
    the same one twice in a process."""
    top = _ephemeral_start()
    for _ in range(200) if top - LOWEST > 1_000 else ():
        port = random.randrange(LOWEST, top)
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
