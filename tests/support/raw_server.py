"""A loopback TCP (or TLS) server that misbehaves at the byte level, for the failures a
well-formed HTTP server cannot produce: resets, silence, short or garbled answers.

    async def answer(reader, writer): ...   # after the request head was read
    async with RawServer(answer) as server:
        ...  # server.url is http://127.0.0.1:PORT (https with `tls`)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Self

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """Reads each connection's request head, then hands the connection to `answer`
    (closed afterwards). `read_head=False` hands it over at once."""

    def __init__(
        self, answer: Answer, *, tls: ssl.SSLContext | None = None, read_head: bool = True
    ) -> None:
        self._answer = answer
        self._tls = tls
        self._read_head = read_head
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._read_head:
                await reader.readuntil(b"\r\n\r\n")
            await self._answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def head(status: str = "200 OK", **headers: str | int) -> bytes:
    """An HTTP/1.1 response head; `Content_Length=5` becomes `Content-Length: 5`."""
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def full_backlog() -> Iterator[str]:
    """The url of a listening port whose accept queue is full and never drained: Linux
    drops the SYN of every further connect, which then hangs until its deadline."""
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        address = server.getsockname()
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(address)
            except TimeoutError:
                break  # this one hung: the queue is full
        else:
            raise RuntimeError("the accept queue never filled up")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()
