"""Talking to one upstream GOPROXY: pooled keep-alive connections, deadlines, streaming.

`UpstreamClient.fetch` returns an `UpstreamAnswer` whose body is either read
whole (small answers, bounded by a size cap) or left open for streaming
(.zip). Every failure is an `UpstreamError` with a cause (timeout, reset,
unreachable, truncated, too_large, redirect) and a one-line message that
never carries a credential.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

from router import __version__
from router.config.model import Upstream

log = logging.getLogger("goproxy_router.upstream")

Cause = Literal["timeout", "reset", "unreachable", "truncated", "too_large", "redirect", "status"]

USER_AGENT = f"goproxy-router/{__version__}"
MAX_REDIRECTS = 10
ERROR_BODY_BYTES = 4096
CHUNK = 256 << 10


class UpstreamError(Exception):
    """An upstream that did not give a usable answer."""

    def __init__(self, upstream: str, cause: Cause, message: str) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.cause = cause


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
                    raise UpstreamError(self.upstream, "too_large", "body exceeds the size cap")
                yield chunk
        except TimeoutError:
            raise UpstreamError(self.upstream, "timeout", "body stalled") from None
        except aiohttp.ClientPayloadError:
            raise UpstreamError(self.upstream, "truncated", "body ended early") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(self.upstream, "reset", _describe(exc)) from None
        if self.content_length is not None and received != self.content_length:
            raise UpstreamError(self.upstream, "truncated", "body shorter than announced")

    def release(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None

    def close(self) -> None:
        """Drop the connection (the body was not read to the end)."""
        if self._response is not None:
            self._response.close()
            self._response = None


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


def _describe(exc: BaseException) -> str:
    """A one-line, credential-free description of a client error."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        detail = os.strerror(errno) if errno else type(exc.os_error).__name__
        return f"cannot connect ({detail})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before an answer"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    return type(exc).__name__


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
        traces = []
        if self._on_connection is not None:
            traces.append(self._connection_trace(self._on_connection))
        self._session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=traces,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.idle
            ),
            auto_decompress=False,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            skip_auto_headers=("Accept-Encoding",),
        )

    def _connection_trace(self, report: Callable[[str, str], None]) -> aiohttp.TraceConfig:
        """Counts connections opened; each request counts one use (so reused = used - opened),
        cheaper than a signal on every reuse."""
        trace = aiohttp.TraceConfig()
        name = self.name

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
            return await self._open(path, method, limit, headers or {})
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
            raise UpstreamError(self.name, "timeout", f"no answer within {t.metadata:g}s") from None

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
        first_byte = self.config.timeouts.first_byte
        try:
            async with asyncio.timeout(first_byte):
                response = await self._follow(url, method, headers)
        except TimeoutError:
            raise UpstreamError(
                self.name, "timeout", f"no response within {first_byte:g}s"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(self.name, "unreachable", _describe(exc)) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(self.name, "reset", _describe(exc)) from None
        length = response.content_length
        answer = UpstreamAnswer(
            upstream=self.name,
            status=response.status,
            content_type=response.headers.get("Content-Type"),
            content_length=length,
            first_byte_seconds=time.monotonic() - started,
            _response=response,
        )
        if response.status == 200 and length is not None and length > limit:
            answer.close()
            raise UpstreamError(self.name, "too_large", f"answer of {length} bytes exceeds the cap")
        return answer

    async def _follow(
        self, url: str, method: str, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Send, following redirects only to the same scheme, host and port."""
        assert self._session is not None
        origin = urlsplit(self.config.url)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._session.request(
                method, URL(url, encoded=True), headers=dict(headers), allow_redirects=False
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
                raise UpstreamError(self.name, "redirect", "redirected to another host")
            url = target.geturl()
        raise UpstreamError(self.name, "redirect", f"more than {MAX_REDIRECTS} redirects")
