"""A real GOPROXY server for fixture modules, on loopback, with a request log and fault injection.

Use it from async tests on the test's own event loop::

    async with FixtureProxy(modules, name="a") as proxy:
        ...  # proxy.url is http://127.0.0.1:PORT

or from synchronous code, on a daemon thread with its own loop::

    proxy = FixtureProxy(modules).start_in_thread()
    try:
        ...
    finally:
        proxy.stop()

It answers ``MODULE/@v/list``, ``@v/VERSION.info|.mod|.zip`` and ``MODULE/@latest`` for
``!``-escaped paths (raw or percent-encoded as ``%21``), ``/sumdb/NAME/supported`` for the names
in ``sumdb`` and canned ``/sumdb/...`` bodies from ``proxy.sumdb_responses``. Anything else is a
404 with a one-line ``text/plain; charset=utf-8`` body. Faults (:class:`Fault`) change answers at
run time; every request is recorded in ``proxy.requests`` (a probe of the base URL in
``proxy.probes``) before any fault applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

from aiohttp import web

from .gomod import (
    FixtureModule,
    ModuleSet,
    info_json,
    module_zip_bytes,
    unescape_path,
    unescape_version,
    write_zip,
)
from .threaded import start_loop_thread, stop_loop_thread

__all__ = ["CT_JSON", "CT_OCTET", "CT_TEXT", "CT_ZIP", "Fault", "FixtureProxy", "RecordedRequest"]

CT_JSON = "application/json"
CT_TEXT = "text/plain; charset=utf-8"
CT_ZIP = "application/zip"
CT_OCTET = "application/octet-stream"

_READ_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it reached the fixture proxy.

    ``path`` is the raw request target as sent (percent-encoding and query kept); ``decoded_path``
    is its path part percent-decoded, so ``!``-escapes read the same whatever the client sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    decoded_path: str


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour applied to requests whose percent-decoded path matches ``pattern``.

    ``pattern`` is a regex searched (``re.search``) in the decoded, still ``!``-escaped path such
    as ``/example.com/!upper/!mod/@v/v1.0.0.zip``; ``None`` matches every request. Effects, in
    order: ``delay`` seconds of sleep before anything is sent; ``reset`` closes the TCP connection
    with an RST and no response; ``redirect_to`` answers 302 to that URL (``{path}`` in it is
    replaced by the raw request path); ``status``/``body``/``content_type`` replace the answer
    (``body`` alone keeps status 200; ``status`` alone gets a one-line text body); then
    ``truncate_at=N`` sends the headers with the full Content-Length, N body bytes and closes the
    connection, while ``stall_after=N`` sends N bytes, hangs ``stall`` seconds and closes it.
    ``times`` limits the fault to the first N matching requests.
    """

    pattern: str | None = None
    status: int | None = None
    delay: float = 0.0
    reset: bool = False
    truncate_at: int | None = None
    stall_after: int | None = None
    stall: float = 10.0
    body: bytes | None = None
    content_type: str | None = None
    redirect_to: str | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("Fault.times must be at least 1 (or None for always)")
        for name in ("truncate_at", "stall_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"Fault.{name} must not be negative")
        if self.pattern is not None:
            re.compile(self.pattern)

    def matches(self, decoded_path: str) -> bool:
        """True when this fault applies to ``decoded_path``."""
        return self.pattern is None or re.search(self.pattern, decoded_path) is not None


@dataclass(slots=True)
class _FaultSlot:
    fault: Fault
    remaining: int | None


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the proxy would send: status, Content-Type and a body in memory or in a file."""

    status: int
    content_type: str
    body: bytes = b""
    file: Path | None = None

    @property
    def size(self) -> int:
        return self.file.stat().st_size if self.file is not None else len(self.body)

    async def chunks(self, limit: int) -> AsyncIterator[bytes]:
        """Yield at most ``limit`` bytes of the body."""
        if self.file is None:
            yield self.body[:limit]
            return
        with self.file.open("rb") as f:
            while limit > 0:
                chunk = await asyncio.to_thread(f.read, min(_READ_CHUNK, limit))
                if not chunk:
                    return
                limit -= len(chunk)
                yield chunk


def _not_found(message: str) -> _Answer:
    return _Answer(404, CT_TEXT, (message.splitlines() or ["not found"])[0].encode() + b"\n")


@dataclass
class _Running:
    """The live parts of a started proxy."""

    runner: web.AppRunner
    port: int
    zip_dir: Path
    tmp: tempfile.TemporaryDirectory[str] | None
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    zip_files: dict[FixtureModule, Path] = field(default_factory=dict)
    zip_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)


class FixtureProxy:
    """A GOPROXY server for a :class:`ModuleSet`, on ``127.0.0.1`` and a free port.

    ``name`` only labels logs and threads. ``sumdb`` names the checksum databases whose
    ``/sumdb/NAME/supported`` answers 200. ``base_path`` mounts the protocol under a prefix (the
    URL then ends with it). ``zip_dir`` is where large modules' zips are written (a temporary
    directory removed on stop by default).

    Attributes tests use: ``modules`` (the live :class:`ModuleSet`; add versions mid-test),
    ``requests`` (every :class:`RecordedRequest`, in arrival order, but for the gateway's probes:
    GETs of the base URL itself, which go to ``probes``; faults apply to both),
    ``sumdb_responses`` (canned bodies keyed by the full decoded request path, e.g.
    ``"/sumdb/sum.golang.org/lookup/rsc.io/quote@v1.5.2"``) and ``bytes_served`` (body bytes
    sent for GET requests, for cost accounting checks).
    """

    def __init__(
        self,
        modules: ModuleSet | Iterable[FixtureModule] = (),
        *,
        name: str = "fixture",
        sumdb: Iterable[str] = (),
        base_path: str = "",
        zip_dir: Path | None = None,
        ssl_context: Any = None,
        required_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.modules = modules if isinstance(modules, ModuleSet) else ModuleSet(modules)
        self.sumdb = set(sumdb)
        self.sumdb_responses: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.probes: list[RecordedRequest] = []
        self.bytes_served = 0
        self.base_path = base_path.rstrip("/")
        self._zip_dir = zip_dir
        self._ssl = ssl_context
        self.required_headers = dict(required_headers or {})
        self._faults: list[_FaultSlot] = []
        self._faults_lock = threading.Lock()
        self._zip_cache: dict[FixtureModule, bytes] = {}
        self._running: _Running | None = None

    # ---------------------------------------------------------------- public helpers

    @property
    def port(self) -> int:
        """The TCP port (only once started)."""
        if self._running is None:
            raise RuntimeError(f"fixture proxy {self.name!r} is not running")
        return self._running.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` plus ``base_path``: what goes into GOPROXY."""
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.base_path}"

    def add_fault(self, fault: Fault) -> Fault:
        """Append a fault (faults are tried in the order added; the first match wins)."""
        with self._faults_lock:
            self._faults.append(_FaultSlot(fault, fault.times))
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._faults_lock:
            self._faults.clear()

    def count(self, path_substring: str = "") -> int:
        """How many recorded requests contain ``path_substring`` in their raw or decoded path."""
        return len(self.requests_for(path_substring))

    def requests_for(self, path_substring: str = "") -> list[RecordedRequest]:
        """The recorded requests whose raw or decoded path contains ``path_substring``."""
        return [
            r
            for r in list(self.requests)
            if path_substring in r.path or path_substring in r.decoded_path
        ]

    def clear_requests(self) -> None:
        """Forget the request log."""
        self.requests.clear()

    # ---------------------------------------------------------------- lifecycle (async)

    async def start(self) -> Self:
        """Start serving on the current event loop; large modules' zips are written first."""
        if self._running is not None:
            raise RuntimeError(f"fixture proxy {self.name!r} already started")
        tmp = None
        zip_dir = self._zip_dir
        if zip_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix=f"fixture-proxy-{self.name}-")
            zip_dir = Path(tmp.name)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self._running = _Running(runner=runner, port=port, zip_dir=zip_dir, tmp=tmp)
        try:
            for m in self.modules:
                if m.is_large:
                    await self._large_zip(m)
            await web.SockSite(runner, sock, ssl_context=self._ssl).start()
        except BaseException:
            await self.aclose()
            sock.close()
            raise
        return self

    async def aclose(self) -> None:
        """Stop serving (in-flight requests get a quarter of a second, then are cancelled)."""
        running, self._running = self._running, None
        if running is None:
            return
        try:
            await running.runner.cleanup()
        finally:
            if running.tmp is not None:
                running.tmp.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- lifecycle (thread)

    def start_in_thread(self, timeout: float = 60.0) -> Self:
        """Start serving on a daemon thread with its own event loop; returns once listening."""
        loop, thread = start_loop_thread(self.start, f"fixture-proxy-{self.name}", timeout)
        assert self._running is not None
        self._running.thread, self._running.loop = thread, loop
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a proxy started with :meth:`start_in_thread` and join its thread."""
        running = self._running
        if running is None or running.loop is None or running.thread is None:
            return
        stop_loop_thread(running.loop, running.thread, self.aclose, timeout)

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        decoded = unquote(raw.split("?", 1)[0])
        recorded = RecordedRequest(request.method, raw, dict(request.headers), decoded)
        root = ("/", self.base_path, self.base_path + "/")
        if request.method == "GET" and "?" not in raw and decoded in root:
            self.probes.append(recorded)  # the gateway's health/RTT probe of the base URL
        else:
            self.requests.append(recorded)
        if request.method not in ("GET", "HEAD"):
            return self._send(request, _Answer(405, CT_TEXT, b"method not allowed\n"))
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return self._send(request, _Answer(401, CT_TEXT, b"unauthorized\n"))
        fault = self._take_fault(decoded)
        if fault is None:
            return self._send(request, await self._answer(decoded))
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            _reset_connection(request)
            return web.Response()
        if fault.redirect_to is not None:
            location = fault.redirect_to.replace("{path}", raw)
            return web.Response(status=302, headers={"Location": location})
        answer = _apply_overrides(await self._answer(decoded), fault)
        if fault.truncate_at is not None or fault.stall_after is not None:
            return await self._send_partial(request, answer, fault)
        return self._send(request, answer)

    def _take_fault(self, decoded_path: str) -> Fault | None:
        with self._faults_lock:
            for slot in self._faults:
                if not slot.fault.matches(decoded_path):
                    continue
                if slot.remaining is not None:
                    slot.remaining -= 1
                    if slot.remaining <= 0:
                        self._faults.remove(slot)
                return slot.fault
        return None

    def _send(self, request: web.Request, answer: _Answer) -> web.StreamResponse:
        if request.method == "GET":
            self.bytes_served += answer.size
        headers = {"Content-Type": answer.content_type}
        if answer.file is not None:
            return web.FileResponse(answer.file, status=answer.status, headers=headers)
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def _send_partial(
        self, request: web.Request, answer: _Answer, fault: Fault
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=answer.status, headers={"Content-Type": answer.content_type}
        )
        resp.content_length = answer.size
        await resp.prepare(request)
        limit = fault.stall_after if fault.stall_after is not None else fault.truncate_at
        assert limit is not None
        async for chunk in answer.chunks(limit):
            await resp.write(chunk)
            self.bytes_served += len(chunk)
        await _drain(request)
        if fault.stall_after is not None:
            await asyncio.sleep(fault.stall)
        if request.transport is not None:
            request.transport.close()
        return resp

    # ---------------------------------------------------------------- the protocol

    async def _answer(self, decoded: str) -> _Answer:
        if self.base_path:
            if not decoded.startswith(self.base_path + "/"):
                return _not_found(f"not found: {decoded} is outside {self.base_path}")
            decoded = decoded[len(self.base_path) :]
        if decoded.startswith("/sumdb/"):
            return self._sumdb(decoded)
        rest = decoded[1:]
        at_v = rest.rfind("/@v/")
        if at_v >= 0:
            return await self._at_v(rest[:at_v], rest[at_v + len("/@v/") :])
        if rest.endswith("/@latest"):
            return self._latest(rest[: -len("/@latest")])
        return _not_found(f"not found: {decoded}")

    async def _at_v(self, escaped_module: str, file: str) -> _Answer:
        try:
            module = unescape_path(escaped_module)
        except ValueError as exc:
            return _not_found(f"not found: {exc}")
        if file == "list":
            if not self.modules.has_path(module):
                return _not_found(f"not found: module {module}: no matching versions")
            return _Answer(200, CT_TEXT, self.modules.list_text(module))
        escaped_version, dot, ext = file.rpartition(".")
        if not dot or ext not in ("info", "mod", "zip"):
            return _not_found(f"not found: unexpected file {file!r}")
        try:
            version = unescape_version(escaped_version)
        except ValueError as exc:
            return _not_found(f"not found: {exc}")
        m = self.modules.get(module, version)
        if m is None:
            return _not_found(f"not found: {module}@{version}: invalid version: unknown revision")
        if ext == "info":
            return _Answer(200, CT_JSON, info_json(m))
        if ext == "mod":
            return _Answer(200, CT_TEXT, m.mod)
        if m.is_large:
            return _Answer(200, CT_ZIP, file=await self._large_zip(m))
        return _Answer(200, CT_ZIP, self._small_zip(m))

    def _latest(self, escaped_module: str) -> _Answer:
        try:
            module = unescape_path(escaped_module)
        except ValueError as exc:
            return _not_found(f"not found: {exc}")
        m = self.modules.latest(module)
        if m is None:
            return _not_found(f"not found: module {module}: no matching versions")
        return _Answer(200, CT_JSON, info_json(m))

    def _sumdb(self, decoded: str) -> _Answer:
        parts = decoded.split("/", 3)  # "", "sumdb", NAME, REST
        if len(parts) == 4 and parts[3] == "supported":
            if parts[2] in self.sumdb:
                return _Answer(200, CT_TEXT, b"")
            return _not_found(f"not found: sumdb {parts[2]} is not proxied here")
        body = self.sumdb_responses.get(decoded)
        if body is None:
            return _not_found(f"not found: {decoded}")
        return _Answer(200, CT_OCTET if "/tile/" in decoded else CT_TEXT, body)

    def _small_zip(self, m: FixtureModule) -> bytes:
        data = self._zip_cache.get(m)
        if data is None:
            data = self._zip_cache[m] = module_zip_bytes(m)
        return data

    async def _large_zip(self, m: FixtureModule) -> Path:
        running = self._running
        assert running is not None
        lock = running.zip_locks.setdefault(m.key, asyncio.Lock())
        async with lock:
            path = running.zip_files.get(m)
            if path is None:
                dest = running.zip_dir / f"{len(running.zip_files)}-{m.escaped_version}.zip"
                path = await asyncio.to_thread(write_zip, m, dest)
                running.zip_files[m] = path
        return path


def _apply_overrides(answer: _Answer, fault: Fault) -> _Answer:
    if fault.status is None and fault.body is None and fault.content_type is None:
        return answer
    status = fault.status if fault.status is not None else 200
    if fault.body is not None:
        return _Answer(status, fault.content_type or answer.content_type, fault.body)
    if fault.status is not None and not 200 <= status < 300:
        reason = f"{status} injected fault\n".encode()
        return _Answer(status, fault.content_type or CT_TEXT, reason)
    return replace(answer, status=status, content_type=fault.content_type or answer.content_type)


def _reset_connection(request: web.Request) -> None:
    """Close the client connection with a TCP RST (SO_LINGER 0), sending nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _drain(request: web.Request, timeout: float = 5.0) -> None:
    """Wait until the transport's write buffer is empty, so N bytes really left before a close."""
    transport = request.transport
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (
        transport is not None
        and not transport.is_closing()
        and transport.get_write_buffer_size() > 0
        and loop.time() < deadline
    ):
        await asyncio.sleep(0.005)
