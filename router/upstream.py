"""Talking to one upstream GOPROXY: pooled keep-alive connections, deadlines, streaming.

`UpstreamClient.fetch` returns an `UpstreamAnswer` whose body is either read
whole (small answers, bounded by a size cap) or left open for streaming
(.zip). Every failure is an `UpstreamError` with a cause (timeout, reset,
unreachable, truncated, too_large, redirect) and a one-line reason a person can
act on: what went wrong in plain words, with which host, and where it helps what
to check. No reason ever carries a credential (the rules forbid them in urls; the
Authorization header is never described) nor any part of a redirect target
beyond its scheme, host and port.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
from yarl import URL

from router import __version__
from router.core.model import Upstream

log = logging.getLogger("goproxy_router.upstream")

Cause = Literal[
    "timeout", "reset", "unreachable", "truncated", "too_large", "redirect", "status", "busy"
]

USER_AGENT = f"goproxy-router/{__version__}"
MAX_REDIRECTS = 10
ERROR_BODY_BYTES = 4096
CHUNK = 256 << 10


class UpstreamError(Exception):
    """An upstream that did not give a usable answer. `reason` is one line in plain
    words; str() is the same line naming the upstream (`upstream NAME: reason`)."""

    def __init__(self, upstream: str, cause: Cause, reason: str) -> None:
        super().__init__(f"upstream {upstream}: {reason}")
        self.upstream = upstream
        self.cause = cause
        self.reason = reason


@dataclass(slots=True)
class UpstreamAnswer:
    """An upstream's answer: status and headers, and a body read whole or streamed."""

    upstream: str
    status: int
    content_type: str | None
    content_length: int | None
    first_byte_seconds: float
    body: bytes | None = None
    _response: aiohttp.ClientResponse | None = field(default=None, repr=False)
    peer: str = ""  # host:port, for messages
    idle: float = 0.0  # the idle deadline, for messages
    _done: Callable[[], None] | None = field(default=None, repr=False)  # a stream slot back

    async def iter_body(self, limit: int) -> AsyncIterator[bytes]:
        """Stream the body; raises UpstreamError on a broken, stalled or oversized body."""
        if self.body is not None:
            yield self.body
            return
        assert self._response is not None
        received = 0
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK):
                received += len(chunk)
                if received > limit:
                    reason = f"body grew past the {_size(limit)} cap for this kind of request"
                    raise UpstreamError(self.upstream, "too_large", reason)
                yield chunk
        except TimeoutError:
            reason = f"body stalled: no data for {self.idle:g}s (idle timeout)"
            raise UpstreamError(self.upstream, "timeout", reason) from None
        except aiohttp.ClientPayloadError:
            raise UpstreamError(self.upstream, "truncated", self._cut_off(received)) from None
        except aiohttp.ClientError as exc:
            reason = _exchange_problem(exc, self.peer, f"after {received} body bytes")
            raise UpstreamError(self.upstream, "reset", reason) from None
        if self.content_length is not None and received != self.content_length:
            raise UpstreamError(self.upstream, "truncated", self._cut_off(received))

    def _cut_off(self, received: int) -> str:
        of = "" if self.content_length is None else f" of {self.content_length}"
        return f"body cut off after {received}{of} bytes: the upstream closed the connection early"

    def release(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None
        self._finished()

    def close(self) -> None:
        """Drop the connection (the body was not read to the end)."""
        if self._response is not None:
            self._response.close()
            self._response = None
        self._finished()

    def _finished(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()


def _secret(env: str | None, file: str | None) -> str:
    """A secret from an environment variable or a file (never from the rules)."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise LookupError(f"environment variable {env} is not set")
        return value.strip()
    assert file is not None
    try:
        return Path(file).read_text().strip()
    except OSError as exc:
        raise LookupError(f"cannot read secret file {file}: {exc.strerror}") from None


def _auth_header(config: Upstream) -> tuple[str | None, str | None]:
    """(Authorization value, problem): the credential sent to this upstream only."""
    auth = config.auth
    if auth is None:
        return None, None
    try:
        if auth.bearer_env or auth.bearer_file:
            return "Bearer " + _secret(auth.bearer_env, auth.bearer_file), None
        password = _secret(auth.password_env, auth.password_file)
        raw = f"{auth.user}:{password}".encode()
        return "Basic " + base64.b64encode(raw).decode(), None
    except LookupError as exc:
        return None, str(exc)


def _client_ssl(config: Upstream) -> ssl.SSLContext | bool:
    """TLS towards the upstream: a private CA bundle and/or a client certificate."""
    tls = config.tls
    if tls is None:
        return True
    ctx = ssl.create_default_context(cafile=tls.ca) if tls.ca else ssl.create_default_context()
    if tls.cert and tls.key:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


def _size(n: int) -> str:
    """A byte count for people: 16 MiB, 1.5 MiB, 300 KiB, 12 bytes."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{n} bytes"


def _plain(exc: OSError) -> str:
    """An OS error's own words, lower-cased, without a trailing period."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or type(exc).__name__
    return text[:1].lower() + text[1:].rstrip(".")


def _ssl_problem(exc: OSError) -> str:
    """`wrong version number` from `[SSL: WRONG_VERSION_NUMBER] wrong version number (...)`."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return _plain(exc)


def _certificate_problem(exc: Exception) -> str:
    """Why a certificate was not trusted, as OpenSSL says it."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = str(exc.verify_message)
        return text[:1].lower() + text[1:].rstrip(".")
    return type(exc).__name__


def _connect_problem(exc: aiohttp.ClientConnectorError, host: str, peer: str) -> str:
    """Why no connection to the upstream could be opened, and what to check."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return (
            f"cannot resolve host {host} ({_plain(exc.os_error)}): "
            "check the url in the rules and this machine's DNS"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (
            f"TLS certificate of {host} is not trusted "
            f"({_certificate_problem(exc.certificate_error)}): "
            "if it is signed by a private CA, set tls.ca of this upstream"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return (
            f"TLS handshake with {peer} failed ({_ssl_problem(exc.os_error)}): "
            "check that it speaks https on that port"
        )
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"connection refused by {peer}: check that the upstream runs and listens there"
    return f"cannot connect to {peer} ({_plain(exc.os_error)})"


def _exchange_problem(exc: aiohttp.ClientError, peer: str, during: str) -> str:
    """Why an open connection gave no usable answer; `during` says when (`before
    answering`, `after N body bytes`)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{peer} closed the connection {during}"
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNRESET
    ):
        return f"connection reset by {peer} {during}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"the answer is not HTTP ({_parse_problem(exc.message)}): check the url and port"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error with {peer} {during} ({_plain(exc)})"
    return f"{type(exc).__name__} talking to {peer} {during}"


def _parse_problem(message: str) -> str:
    """aiohttp's parser complaint on one line, without its caret line: `bad status line:
    expected HTTP/, RTSP/ or ICE/: b'SSH-2.0-OpenSSH_9.6'`."""
    parts = [line.strip() for line in str(message).splitlines()]
    text = " ".join(p for p in parts if p and set(p) != {"^"})
    text = "".join(ch for ch in text if ch.isprintable())[:120]
    return text[:1].lower() + text[1:]


def _origin(url: SplitResult) -> str:
    """scheme://host[:port] of a url: never its user, path or query (which may be signed)."""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")


def _host_and_peer(url: str) -> tuple[str, str]:
    """(host, host:port) of an upstream url, the port made explicit."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _PoolWait:
    """Set by the connection trace while a request waits for a free pooled connection:
    aiohttp's `connect` timeout covers that wait and the TCP/TLS connect alike."""

    waiting: bool = False


class UpstreamClient:
    """One upstream's connection pool and request logic."""

    def __init__(
        self, config: Upstream, on_connection: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._on_connection = on_connection
        self._auth_header: str | None = None
        self._auth_problem: str | None = None
        self._host, self._peer = _host_and_peer(config.url)
        # Streamed bodies (zips) may hold at most this many connections: the rest are
        # kept for small answers, so downloads can never starve metadata.
        self.stream_slots = max(1, config.max_connections - max(1, config.max_connections // 4))
        self._streams: asyncio.Semaphore | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def url_for(self, path: str) -> str:
        return f"{self.config.url}/{path}"

    async def start(self) -> None:
        t = self.config.timeouts
        self._auth_header, self._auth_problem = _auth_header(self.config)
        if self._auth_problem:
            log.error("upstream %s: %s", self.name, self._auth_problem)
        try:
            tls: ssl.SSLContext | bool = _client_ssl(self.config)
        except (OSError, ssl.SSLError) as exc:
            self._auth_problem = f"bad tls settings: {exc}"
            log.error("upstream %s: %s", self.name, self._auth_problem)
            tls = True
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections,
            keepalive_timeout=30,
            ttl_dns_cache=300,
            ssl=tls,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=[self._connection_trace(self._on_connection)],
            timeout=aiohttp.ClientTimeout(
                total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.idle
            ),
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            skip_auto_headers=("Accept-Encoding",),
        )

    def _connection_trace(self, report: Callable[[str, str], None] | None) -> aiohttp.TraceConfig:
        """Marks a request's `_PoolWait` while it queues for a free connection; with `report`,
        counts connections opened too (each request counts one use, so reused = used -
        opened, cheaper than a signal on every reuse)."""
        trace = aiohttp.TraceConfig()
        name = self.name

        async def queued(_: object, ctx: SimpleNamespace, __: object) -> None:
            if isinstance(ctx.trace_request_ctx, _PoolWait):
                ctx.trace_request_ctx.waiting = True

        async def dequeued(_: object, ctx: SimpleNamespace, __: object) -> None:
            if isinstance(ctx.trace_request_ctx, _PoolWait):
                ctx.trace_request_ctx.waiting = False

        trace.on_connection_queued_start.append(queued)
        trace.on_connection_queued_end.append(dequeued)
        if report is not None:

            async def opened(*_: object) -> None:
                report(name, "opened")

            trace.on_connection_create_end.append(opened)
        return trace

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        path: str,
        *,
        method: str = "GET",
        stream: bool = False,
        limit: int,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamAnswer:
        """Ask for `path` (already escaped). Small answers are read whole within the
        metadata deadline; with `stream`, the body is left open for the caller."""
        t = self.config.timeouts
        if stream:
            return await self._open_stream(path, method, limit, headers or {})
        try:
            async with asyncio.timeout(t.metadata):
                answer = await self._open(path, method, limit, headers or {})
                try:
                    if answer.status == 200 and method != "HEAD":
                        answer.body = b"".join([c async for c in answer.iter_body(limit)])
                    elif method != "HEAD":
                        answer.body = await self._error_body(answer)
                finally:
                    answer.release()
                return answer
        except TimeoutError:
            reason = f"no complete answer within {t.metadata:g}s (metadata timeout)"
            raise UpstreamError(self.name, "timeout", reason) from None

    async def _open_stream(
        self, path: str, method: str, limit: int, headers: Mapping[str, str]
    ) -> UpstreamAnswer:
        """`_open` within a stream slot, held until the body is released or closed."""
        if self._streams is None:
            self._streams = asyncio.Semaphore(self.stream_slots)
        slots = self._streams
        wait = self.config.timeouts.connect
        try:
            async with asyncio.timeout(wait):
                await slots.acquire()
        except TimeoutError:
            kept = self.config.max_connections - self.stream_slots
            reason = (
                f"no free connection for a download within {wait:g}s: all {self.stream_slots} "
                f"it may use are busy ({kept} of its max_connections "
                f"{self.config.max_connections} kept for metadata)"
            )
            raise UpstreamError(self.name, "busy", reason) from None
        try:
            answer = await self._open(path, method, limit, headers)
        except BaseException:
            slots.release()
            raise
        answer._done = slots.release
        return answer

    async def probe(self) -> tuple[bool, float | None]:
        """One cheap request to the upstream's base URL: (healthy, time to first byte).

        Any answer below 500 means alive (a GOPROXY need not serve its root)."""
        t = self.config.timeouts
        try:
            async with asyncio.timeout(t.connect + t.first_byte):
                answer = await self._open("", "GET", 1 << 16, {})
                answer.close()
        except (UpstreamError, TimeoutError):
            return False, None
        return answer.status < 500, answer.first_byte_seconds

    async def _error_body(self, answer: UpstreamAnswer) -> bytes:
        assert answer._response is not None
        try:
            return await answer._response.content.read(ERROR_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            return b""

    async def _open(
        self, path: str, method: str, limit: int, headers: Mapping[str, str]
    ) -> UpstreamAnswer:
        """Send the request and wait for the response head (first-byte deadline)."""
        if self._session is None:
            raise UpstreamError(self.name, "unreachable", "client not started")
        if self._auth_problem:
            raise UpstreamError(self.name, "unreachable", "credentials for it are not available")
        if self._auth_header is not None:
            headers = {**headers, "Authorization": self._auth_header}
        url = self.url_for(path)
        if self._on_connection is not None:
            self._on_connection(self.name, "used")
        started = time.monotonic()
        wait = _PoolWait()
        try:
            async with asyncio.timeout(self.config.timeouts.first_byte):
                response = await self._follow(url, method, headers, wait)
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors too
            raise self._timed_out(exc, wait) from None
        except aiohttp.ClientConnectorError as exc:
            reason = _connect_problem(exc, self._host, self._peer)
            raise UpstreamError(self.name, "unreachable", reason) from None
        except aiohttp.ClientError as exc:
            reason = _exchange_problem(exc, self._peer, "before answering")
            raise UpstreamError(self.name, "reset", reason) from None
        length = response.content_length
        answer = UpstreamAnswer(
            upstream=self.name,
            status=response.status,
            content_type=response.headers.get("Content-Type"),
            content_length=length,
            first_byte_seconds=time.monotonic() - started,
            _response=response,
            peer=self._peer,
            idle=self.config.timeouts.idle,
        )
        if response.status == 200 and length is not None and length > limit:
            answer.close()
            reason = (
                f"answer announces {_size(length)}, over the {_size(limit)} cap "
                "for this kind of request"
            )
            raise UpstreamError(self.name, "too_large", reason)
        return answer

    def _timed_out(self, exc: TimeoutError, wait: _PoolWait) -> UpstreamError:
        """Which deadline passed before the response head: the wait for a pooled
        connection, the connect, a silent socket, or the first byte."""
        t = self.config.timeouts
        if wait.waiting:
            n = self.config.max_connections
            seconds = t.connect if isinstance(exc, aiohttp.ConnectionTimeoutError) else t.first_byte
            reason = (
                f"no free connection within {seconds:g}s: all {n} of its max_connections "
                "are busy with other requests"
            )
            return UpstreamError(self.name, "busy", reason)
        elif isinstance(exc, aiohttp.ConnectionTimeoutError):
            reason = (
                f"cannot connect to {self._peer} within {t.connect:g}s (connect timeout): "
                "check that the host is reachable from here"
            )
        elif isinstance(exc, aiohttp.SocketTimeoutError):
            reason = f"no data for {t.idle:g}s while waiting for the answer (idle timeout)"
        else:
            reason = f"no response within {t.first_byte:g}s of the request (first_byte timeout)"
        return UpstreamError(self.name, "timeout", reason)

    async def _follow(
        self, url: str, method: str, headers: Mapping[str, str], wait: _PoolWait
    ) -> aiohttp.ClientResponse:
        """Send, following redirects only to the same scheme, host and port."""
        assert self._session is not None
        origin = urlsplit(self.config.url)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._session.request(
                method,
                URL(url, encoded=True),
                headers=dict(headers),
                allow_redirects=False,
                trace_request_ctx=wait,
            )
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location", "")
            response.release()
            target = urlsplit(urljoin(url, location))
            if (target.scheme, target.hostname, target.port) != (
                origin.scheme,
                origin.hostname,
                origin.port,
            ):
                reason = (
                    f"refused a redirect to {_origin(target)} (only redirects within "
                    f"{_origin(origin)} are followed): set the upstream's url in the rules "
                    "to where it redirects"
                )
                raise UpstreamError(self.name, "redirect", reason)
            url = target.geturl()
        reason = f"more than {MAX_REDIRECTS} redirects: check the upstream's url in the rules"
        raise UpstreamError(self.name, "redirect", reason)
