"""Every way an upstream can fail, produced for real on loopback, and the one line a
person gets for it: from the upstream client directly, and as the gateway's 502/504.

Each line names the upstream, says the cause in plain words and, where it helps,
what to check."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from support.gateway import free_port, gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import Fault, FixtureProxy
from support.raw_server import RawServer, full_backlog, head, reset

from router.config import load_or_raise
from router.upstream import UpstreamClient, UpstreamError

MOD = simple_module("example.com/dep", "v1.0.0")
MOD_PATH = "/example.com/dep/@v/v1.0.0.mod"
OTHER = simple_module("example.com/other", "v1.0.0")
OTHER_ZIP = "/example.com/other/@v/v1.0.0.zip"
INFO_PATH = "/example.com/dep/@v/v1.0.0.info"
ZIP_PATH = "/example.com/dep/@v/v1.0.0.zip"
QUICK = {"connect": "300ms", "first_byte": "1s", "metadata": "3s", "total": "5s", "idle": "1s"}


@dataclass
class Situation:
    """An upstream in a failing state and what must be said about it."""

    url: str
    reason: str | re.Pattern[str]  # exactly this reason (or a full match)
    cause: str
    status: int  # the gateway's answer
    timeouts: dict[str, str] = field(default_factory=lambda: dict(QUICK))
    settings: dict[str, Any] = field(default_factory=dict)
    path: str = MOD_PATH
    limit: int = 16 << 20  # the size cap of `path`'s kind (.mod)
    hold: str | None = None  # first stream this path and leave it unread
    stream: bool = False  # ask for `path` as a download (a zip)


Scenario = Callable[[], AbstractAsyncContextManager[Situation]]


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(10)


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None


async def _rst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reset(writer)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()


async def _stall_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head(Content_Length=100, Content_Type="text/plain") + b"x" * 10)
    await writer.drain()
    await asyncio.sleep(10)


async def _cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head(Content_Length=100, Content_Type="text/plain") + b"x" * 10)
    await writer.drain()


async def _announce_too_much(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head(Content_Length=17 << 20, Content_Type="text/plain"))
    await writer.drain()
    await asyncio.sleep(10)


async def _grow_too_much(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(head(Transfer_Encoding="chunked", Content_Type="application/json"))
    chunk = b"x" * (64 << 10)
    for _ in range(20):  # 1.25 MiB, past the 1 MiB cap of .info
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _answer_plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)  # a TLS ClientHello, taken for a bad HTTP request
    writer.write(head("400 Bad Request", Content_Length=0, Connection="close"))
    await writer.drain()


@asynccontextmanager
async def unresolvable() -> AsyncIterator[Situation]:
    yield Situation(
        "https://goproxy.invalid",
        "cannot resolve host goproxy.invalid (name or service not known): "
        "check the url in the rules and this machine's DNS",
        "unreachable",
        502,
    )


@asynccontextmanager
async def refused() -> AsyncIterator[Situation]:
    port = free_port()  # bound, then closed: nothing listens there
    yield Situation(
        f"http://127.0.0.1:{port}",
        f"connection refused by 127.0.0.1:{port}: check that the upstream runs and listens there",
        "unreachable",
        502,
    )


@asynccontextmanager
async def reset_before_answer() -> AsyncIterator[Situation]:
    async with RawServer(_rst) as server:
        reason = f"connection reset by 127.0.0.1:{server.port} before answering"
        yield Situation(server.url, reason, "reset", 502)


@asynccontextmanager
async def closed_before_answer() -> AsyncIterator[Situation]:
    async with RawServer(_hang_up) as server:
        reason = f"127.0.0.1:{server.port} closed the connection before answering"
        yield Situation(server.url, reason, "reset", 502)


@asynccontextmanager
async def not_http() -> AsyncIterator[Situation]:
    async with RawServer(_garbage) as server:
        reason = re.compile(
            r"the answer is not HTTP \(bad status line: .*b'SSH-2\.0-OpenSSH_9\.6'\): "
            r"check the url and port"
        )
        yield Situation(server.url, reason, "reset", 502)


@asynccontextmanager
async def untrusted_certificate() -> AsyncIterator[Situation]:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    async with RawServer(_hang_up, tls=tls) as server:
        yield Situation(
            server.url,
            "TLS certificate of 127.0.0.1 is not trusted (unable to get local issuer "
            "certificate): if it is signed by a private CA, set tls.ca of this upstream",
            "unreachable",
            502,
        )


@asynccontextmanager
async def plain_http_on_https() -> AsyncIterator[Situation]:
    async with RawServer(_answer_plain_http, read_head=False) as server:
        yield Situation(
            f"https://127.0.0.1:{server.port}",
            f"TLS handshake with 127.0.0.1:{server.port} failed (wrong version number): "
            "check that it speaks https on that port",
            "unreachable",
            502,
        )


@asynccontextmanager
async def connect_hangs() -> AsyncIterator[Situation]:
    with full_backlog() as url:
        yield Situation(
            url,
            f"cannot connect to {url.removeprefix('http://')} within 0.3s (connect timeout): "
            "check that the host is reachable from here",
            "timeout",
            504,
        )


@asynccontextmanager
async def pool_busy() -> AsyncIterator[Situation]:
    proxy = FixtureProxy(ModuleSet([MOD]), name="up")
    proxy.add_fault(Fault(pattern=r"\.zip$", stall_after=100, stall=1.5))
    async with proxy:
        yield Situation(
            proxy.url,
            "no free connection within 0.3s: all 1 of its max_connections "
            "are busy with other requests",
            "busy",
            503,
            timeouts={**QUICK, "idle": "3s"},
            settings={"max_connections": 1},
            hold=ZIP_PATH,
        )


@asynccontextmanager
async def downloads_busy() -> AsyncIterator[Situation]:
    proxy = FixtureProxy(ModuleSet([MOD, OTHER]), name="up")
    proxy.add_fault(Fault(pattern=r"dep/@v/v1\.0\.0\.zip$", stall_after=100, stall=1.5))
    async with proxy:
        yield Situation(
            proxy.url,
            "no free connection for a download within 0.3s: all 1 it may use are busy "
            "(1 of its max_connections 2 kept for metadata)",
            "busy",
            503,
            timeouts={**QUICK, "idle": "3s"},
            settings={"max_connections": 2},
            path=OTHER_ZIP,
            limit=500 << 20,
            hold=ZIP_PATH,
            stream=True,
        )


@asynccontextmanager
async def no_first_byte() -> AsyncIterator[Situation]:
    async with RawServer(_silent) as server:
        reason = "no response within 0.3s of the request (first_byte timeout)"
        timeouts = {**QUICK, "first_byte": "300ms"}
        yield Situation(server.url, reason, "timeout", 504, timeouts=timeouts)


@asynccontextmanager
async def silent_past_idle() -> AsyncIterator[Situation]:
    async with RawServer(_silent) as server:
        reason = "no data for 0.3s while waiting for the answer (idle timeout)"
        timeouts = {**QUICK, "first_byte": "2s", "idle": "300ms"}
        yield Situation(server.url, reason, "timeout", 504, timeouts=timeouts)


@asynccontextmanager
async def stalled_body() -> AsyncIterator[Situation]:
    async with RawServer(_stall_mid_body) as server:
        reason = "body stalled: no data for 0.3s (idle timeout)"
        timeouts = {**QUICK, "idle": "300ms"}
        yield Situation(server.url, reason, "timeout", 504, timeouts=timeouts)


@asynccontextmanager
async def announced_too_large() -> AsyncIterator[Situation]:
    async with RawServer(_announce_too_much) as server:
        reason = "answer announces 17 MiB, over the 16 MiB cap for this kind of request"
        yield Situation(server.url, reason, "too_large", 502)


@asynccontextmanager
async def grew_too_large() -> AsyncIterator[Situation]:
    async with RawServer(_grow_too_much) as server:
        reason = "body grew past the 1 MiB cap for this kind of request"
        yield Situation(server.url, reason, "too_large", 502, path=INFO_PATH, limit=1 << 20)


@asynccontextmanager
async def truncated() -> AsyncIterator[Situation]:
    async with RawServer(_cut_short) as server:
        reason = re.compile(
            r"body cut off after \d+ of 100 bytes: the upstream closed the connection early"
        )
        yield Situation(server.url, reason, "truncated", 502)


@asynccontextmanager
async def redirect_elsewhere() -> AsyncIterator[Situation]:
    elsewhere = f"http://localhost:{free_port()}"

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        location = f"{elsewhere}/signed/x.mod?token=s3cr3t"
        writer.write(head("302 Found", Location=location, Content_Length=0))
        await writer.drain()

    async with RawServer(redirect) as server:
        yield Situation(
            server.url,
            f"refused a redirect to {elsewhere} (only redirects within {server.url} are "
            "followed): set the upstream's url in the rules to where it redirects",
            "redirect",
            502,
        )


SCENARIOS = [
    pytest.param(unresolvable, id="dns"),
    pytest.param(refused, id="refused"),
    pytest.param(reset_before_answer, id="reset"),
    pytest.param(closed_before_answer, id="closed"),
    pytest.param(not_http, id="not-http"),
    pytest.param(untrusted_certificate, id="tls-verify"),
    pytest.param(plain_http_on_https, id="tls-handshake"),
    pytest.param(connect_hangs, id="connect-timeout"),
    pytest.param(pool_busy, id="pool-wait"),
    pytest.param(downloads_busy, id="downloads-busy"),
    pytest.param(no_first_byte, id="first-byte-timeout"),
    pytest.param(silent_past_idle, id="idle-before-head"),
    pytest.param(stalled_body, id="idle-timeout"),
    pytest.param(announced_too_large, id="oversized-announced"),
    pytest.param(grew_too_large, id="oversized-growing"),
    pytest.param(truncated, id="truncated"),
    pytest.param(redirect_elsewhere, id="redirect-refused"),
]


def _rules(tmp_path: Path, s: Situation) -> Path:
    settings = {"up": {"timeouts": s.timeouts, **s.settings}}
    return one_pool_rules(tmp_path / "rules.yaml", {"up": s.url}, upstream_extra=settings)


def _assert_reason(text: str, expected: str | re.Pattern[str]) -> None:
    if isinstance(expected, str):
        assert text == expected
    else:
        assert expected.fullmatch(text), text


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_upstream_client_says_what_failed(tmp_path: Path, scenario: Scenario) -> None:
    async with scenario() as s:
        client = UpstreamClient(load_or_raise([_rules(tmp_path, s)]).upstreams[0])
        await client.start()
        held = None
        try:
            if s.hold:
                held = await client.fetch(s.hold.lstrip("/"), stream=True, limit=500 << 20)
            with pytest.raises(UpstreamError) as caught:
                await client.fetch(s.path.lstrip("/"), stream=s.stream, limit=s.limit)
        finally:
            if held is not None:
                held.close()
            await client.close()
    error = caught.value
    assert (error.upstream, error.cause) == ("up", s.cause)
    _assert_reason(error.reason, s.reason)
    assert str(error) == f"upstream up: {error.reason}"


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_gateway_answers_with_that_line(tmp_path: Path, scenario: Scenario) -> None:
    async with (
        scenario() as s,
        gateway_in_process(_rules(tmp_path, s)) as gw,
        aiohttp.ClientSession() as http,
    ):
        held = await http.get(gw.url + s.hold) if s.hold else None
        try:
            async with http.get(gw.url + s.path) as resp:
                body = await resp.text()
                assert resp.status == s.status
                assert resp.headers["X-Router-Upstream"] == "up"
        finally:
            if held is not None:
                held.close()
    assert body.endswith("\n") and "\n" not in body[:-1]
    assert body.startswith("upstream up: ")
    _assert_reason(body[len("upstream up: ") : -1], s.reason)
    assert "s3cr3t" not in body and "/signed/" not in body
