"""Connection-level hardening in front of aiohttp's HTTP parser.

`GuardedSite` listens like `web.TCPSite` but wraps every connection's protocol:

- at most `max_connections` open connections; past that a connection gets a
  one-line 503 and is closed before anything is parsed;
- a request head must arrive whole within `header_timeout` (slow-loris
  connections are closed), and may not exceed `max_header_bytes` (431).

The wrapper only watches the bytes go by (looking for the blank line that ends
a head, skipping announced bodies); parsing stays aiohttp's.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)


@dataclass(slots=True)
class GuardLimits:
    max_connections: int
    header_timeout: float
    max_header_bytes: int


def _reply(transport: asyncio.BaseTransport, status: str, text: str) -> None:
    body = text.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Router-Upstream: none\r\n\r\n"
    ).encode()
    write = getattr(transport, "write", None)  # uvloop's transports are not asyncio subclasses
    if write is not None and not transport.is_closing():
        write(head + body)
    transport.close()


class GuardedProtocol(asyncio.Protocol):
    """Wraps one connection's aiohttp protocol, enforcing the guard's limits."""

    def __init__(self, inner: Any, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = bytearray()  # bytes of the head being received
        self._skip = 0  # body bytes still to pass before the next head
        self._refused = False
        self._started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard.active += 1
        if self._guard.active > self._guard.limits.max_connections:
            self._refused = True
            self._guard.on_event("connection_refused")
            _reply(transport, "503 Service Unavailable", "too many connections")
            return
        self._inner.connection_made(transport)
        self._started = True
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._guard.limits.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        self._guard.on_event("header_timeout")
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._watch(data):
            self._guard.on_event("header_too_large")
            if self._transport is not None:
                _reply(
                    self._transport, "431 Request Header Fields Too Large", "request head too large"
                )
            self._refused = True
            return
        self._inner.data_received(data)

    def _watch(self, data: bytes) -> bool:
        """Track head boundaries; False when a head grows past the limit."""
        if not self._skip and not self._head and data.find(b"\r\n\r\n") == len(data) - 4:
            return self._head_done(data)  # the common case, one whole head in one read
        view = memoryview(data)
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            self._head += view
            view = memoryview(b"")
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                self._arm()
                return len(self._head) <= self._guard.limits.max_header_bytes
            head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
            self._head = bytearray()
            if not self._head_done(head):
                return False
            view = memoryview(rest)
        return True

    def _head_done(self, head: bytes) -> bool:
        """A whole request head: within the limit (False if not); its body is skipped."""
        if len(head) > self._guard.limits.max_header_bytes:
            return False
        self._disarm()
        match = _CONTENT_LENGTH.search(head)
        self._skip = int(match.group(1)) if match else 0
        return True

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.active -= 1
        self._disarm()
        if self._started:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class Guard:
    """Limits shared by every connection of one listening socket."""

    def __init__(self, limits: GuardLimits, on_event: Callable[[str], None]) -> None:
        self.limits = limits
        self.on_event = on_event
        self.active = 0

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], GuardedProtocol]:
        return lambda: GuardedProtocol(factory(), self)


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through a `Guard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: Guard,
        host: str,
        port: int,
        *,
        ssl_context: Any = None,
        backlog: int = 1024,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(
            runner, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port
        )
        self._guard = guard
        self._listen = (host, port)
        self._tls = ssl_context
        self._backlog_size = backlog
        self._reuse_port = reuse_port

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._guard.wrap(server),
            self._listen[0],
            self._listen[1],
            ssl=self._tls,
            backlog=self._backlog_size,
            reuse_port=self._reuse_port or None,
        )
