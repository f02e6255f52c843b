"""A TCP relay a test can cut, as a server going away would look to its clients: cutting
stops listening (new connections are refused) and resets every connection through it;
restoring listens again on the same port. Holding keeps the server's answers back (a
server too slow to answer) until released. It runs on a loop of its own, in a thread, so
synchronous tests can use it beside the services they start."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from infra.ports import free_port


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event | None = None
) -> None:
    """Copy one direction of a connection until it ends, then close the other side; while
    `flowing` is clear, what arrives waits."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            if flowing is not None:
                await flowing.wait()
            writer.write(data)
            await writer.drain()
    writer.close()


class TcpRelay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._answering = asyncio.Event()
        self._answering.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def restore(self) -> None:
        self._run(self._listen())

    def cut(self) -> None:
        self._run(self._cut())

    def hold(self) -> None:
        self._run(self._flow(False))

    def release(self) -> None:
        self._run(self._flow(True))

    async def _flow(self, answering: bool) -> None:
        if answering:
            self._answering.set()
        else:
            self._answering.clear()

    def _run(self, step: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(step, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not an orderly goodbye
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, target_writer}
        try:
            await asyncio.gather(
                pipe(reader, target_writer), pipe(target_reader, writer, self._answering)
            )
        finally:
            self._writers -= {writer, target_writer}
            writer.close()
            target_writer.close()
