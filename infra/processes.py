"""Service processes: `python -m <module>` on a port, configured by environment only,
exactly as in production. Used by the stack runner, the tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from infra.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    """One instance of a service. Its output goes to `log_dir/<name>.log`, or, with
    `echo`, line by line to that callable (the stack runner prefixes and prints it)."""

    def __init__(
        self,
        module: str,
        port_var: str,
        env: dict[str, str],
        log_dir: Path,
        name: str = "",
        *,
        port: int | None = None,
        echo: Callable[[str], None] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.module = module
        self.name = name or module
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, port_var: str(self.port)}
        self.log_path = log_dir / f"{self.name}.log"
        self.echo = echo
        # Started on this CPU alone (taskset), so that what the service sizes at start-up
        # from its affinity (auth's hashing threads) sees the core it will run on.
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        """Launch it and wait until it answers /healthz; stop it if it never does (no
        process is left running that nobody holds)."""
        self.launch()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out: IO[bytes] | int = subprocess.PIPE if self.echo else self.log_path.open("ab")
        pinned = [] if self.cpu is None else ["taskset", "-c", str(self.cpu)]
        self.process = subprocess.Popen(
            [*pinned, sys.executable, "-m", self.module],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Own session: a terminal's Ctrl-C reaches only the runner, which stops the
            # services in order (before the broker they need to shut down cleanly).
            start_new_session=True,
        )
        if self.echo:
            threading.Thread(target=self._pump, daemon=True).start()
        else:
            assert not isinstance(out, int)
            out.close()

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None and self.echo
        with self.process.stdout, self.log_path.open("ab") as log:
            for line in self.process.stdout:
                log.write(line)
                self.echo(line.decode(errors="replace").rstrip())

    def wait_healthy(self, timeout: float = 60.0, path: str = "/healthz") -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.logs()[-3000:]}{self._holder()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer {path}:\n{self.logs()[-3000:]}")

    def _holder(self) -> str:
        """Who holds our port, when it was taken before we could bind it: `ss` says."""
        if "address already in use" not in self.logs()[-3000:]:
            return ""
        try:
            found = subprocess.run(
                ["ss", "-Htanp", f"sport = :{self.port}"], capture_output=True, text=True
            )
        except OSError as exc:
            return f"\n(ss: {exc})"
        return f"\nsockets on port {self.port}:\n{found.stdout or found.stderr or '(none now)'}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: int) -> None:
        """A signal, without waiting (stop several at once, then wait for each)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, sig: int | None = None) -> int | None:
        """SIGTERM (or `sig`) and wait; SIGKILL after 30 s. The exit code, if it ran."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if sig is None else sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
