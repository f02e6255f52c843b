"""`python -m infra.stack [--prod]`: the whole system on this machine (see topology.py).

Without `--prod`: the development stack (run by infra/up.sh): one instance of each
service on its default port (the web front end on http://127.0.0.1:8003), SQLite, the
embedded broker and an SMTP sink that prints every code. With `--prod`: the production
topology: an nginx gateway on GATEWAY_PORT (default 8080) in front of two instances each
of auth, films, the mailer and the web front end (at the gateway's `/`), on PostgreSQL and
Redis. Either way it prints where the API and the web front end are, then `ready` on a
line of its own once every instance answers, and stops everything on Ctrl-C (SIGINT) or
SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from infra.processes import ROOT
from infra.topology import Topology

COLOURS = {
    "auth": "\033[36m",
    "films": "\033[35m",
    "mailer": "\033[33m",
    "web": "\033[34m",
    "smtp": "\033[32m",
}
_print_lock = threading.Lock()


def echo(source: str, line: str) -> None:
    colour = COLOURS.get(source.split("-")[0], "\033[1m") if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    with _print_lock:
        print(f"{colour}[{source:8}]{reset} {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__)
    parser.add_argument("--prod", action="store_true", help="the production topology")
    parser.add_argument(
        "--instances", type=int, default=2, help="instances of each service with --prod (2)"
    )
    args = parser.parse_args()
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    workdir = ROOT / "var" / ("prod" if args.prod else "local")
    topology = Topology(
        workdir=Path(workdir),
        production=args.prod,
        instances=args.instances if args.prod else 1,
        echo=echo,
    )
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        if not stop.is_set() and ready.is_set():
            stop.set()
        else:  # still starting: abandon the start-up (the finally below cleans up)
            raise KeyboardInterrupt

    ready = threading.Event()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        topology.start()
        where = topology.gateway_url if args.prod else topology.instance("auth").url
        echo("stack", f"all up; the API is at {where}")
        if topology.web_url is not None:
            echo(
                "stack",
                f"the web front end is at {topology.web_url}; open {topology.web_named_url}"
                " for passkeys (browsers refuse them on an IP address)",
            )
        print("ready", flush=True)
        ready.set()
        reported: set[str] = set()
        while not stop.wait(1.0):
            for instance in topology.all_instances():
                if not instance.alive and instance.name not in reported:
                    reported.add(instance.name)
                    echo("stack", f"{instance.name} has exited; the others go on")
            if not args.prod and reported:
                return 1  # the development stack is one of each: nothing to fall back on
        return 0
    finally:
        echo("stack", "stopping")
        topology.stop()
        echo("stack", "stopped")


if __name__ == "__main__":
    sys.exit(main())
