"""Never a wrong answer under faults (issue 12): an answer that has started is never
followed by another on its connection, a full disk costs the client nothing, slow
readers hold nothing for long, spools are bounded, hostile zips are never kept, and a
hung Redis costs requests nothing. Real sockets, a real tmpfs, a real redis-server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from support.gateway import gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, info_json, large_module, module_zip_bytes, simple_module
from support.goproxy_server import CT_ZIP, Fault, FixtureProxy
from support.rawhttp import exchange, get, parse
from support.smallfs import fill, small_fs, used_bytes

from router.app import _prepare_headers, guarded

LIB = simple_module("example.com/lib", "v1.0.0")
BIG = large_module("example.com/big", "v1.0.0", 1_500_000)
BIG2 = large_module("example.com/big2", "v1.0.0", 1_200_000, seed=2)
HUGE = large_module("example.com/huge", "v1.0.0", 12_000_000, seed=3)  # > socket buffers
MODULES = ModuleSet([LIB, BIG, BIG2, HUGE])


@pytest.fixture
async def up() -> AsyncIterator[FixtureProxy]:
    async with FixtureProxy(MODULES, name="up", sumdb=["sum.golang.org"]) as proxy:
        yield proxy


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _metric(url: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ------------------------------------------------------------------ one answer per request


def _guarded_app() -> web.Application:
    """The gateway's serving layer (its middleware and prepare hook) around handlers that
    fail after their answer started."""

    async def fails_midway(http: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1000
        await resp.prepare(http)
        await resp.write(b"x" * 100)
        raise OSError(28, "No space left on device")

    async def answers_twice(http: web.Request) -> web.StreamResponse:
        first = web.StreamResponse()
        first.content_length = 1000
        await first.prepare(http)
        await first.write(b"y" * 100)
        return web.Response(status=500, text="a second answer")

    async def ok(http: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    app = web.Application()
    app.on_response_prepare.append(_prepare_headers)
    app.router.add_get("/fails", guarded(fails_midway))
    app.router.add_get("/twice", guarded(answers_twice))
    app.router.add_get("/ok", guarded(ok))
    return app


@pytest.mark.parametrize("path", ["/fails", "/twice"])
async def test_a_failure_after_the_answer_started_breaks_the_connection_never_answers_again(
    path: str,
) -> None:
    runner = web.AppRunner(_guarded_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        data = await exchange(port, [get(path), get("/ok")], timeout=10)
    finally:
        await runner.cleanup()
    answers = parse(data)
    assert len(answers) == 1, data[:300]  # the pipelined /ok is never answered on it
    assert answers[0].status == 200 and not answers[0].complete
    assert data.count(b"HTTP/1.1 ") == 1


async def test_an_upstream_breaking_mid_zip_breaks_that_connection_only(
    tmp_path: Path, up: FixtureProxy
) -> None:
    up.add_fault(Fault(pattern=r"big/@v/v1\.0\.0\.zip$", truncate_at=400_000, times=1))
    rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache={"memory": "16MiB"})
    async with gateway_in_process(rules) as gw:
        data = await exchange(_port(gw.url), [get(BIG.url_path("zip")), get(LIB.url_path("info"))])
        answers = parse(data)
        assert len(answers) == 1 and not answers[0].complete
        # a fresh connection is served, and whole
        again = parse(await exchange(_port(gw.url), [get(BIG.url_path("zip"))]))
        assert again[0].complete and again[0].body == module_zip_bytes(BIG)


async def test_a_store_file_that_no_longer_reads_back_is_never_served_short(
    tmp_path: Path, up: FixtureProxy
) -> None:
    store = tmp_path / "store"
    rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache={"dir": str(store)})
    async with gateway_in_process(rules) as gw:
        port = _port(gw.url)
        await exchange(port, [get(HUGE.url_path("zip"))])
        await _until_kept(store)
        os.truncate(_data_file(store), 1000)  # the disk lost it under the gateway
        again = parse(await exchange(port, [get(HUGE.url_path("zip"))]))[0]
        assert again.body == module_zip_bytes(HUGE) and again.headers["x-router-upstream"] == "up"
        await _until_kept(store)
        # lost while it is being read: that connection breaks, nothing follows on it (the
        # zip is larger than the socket buffers a file sent straight from the page cache
        # can fill before the client reads, so the loss comes before the gateway reads on)
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(get(HUGE.url_path("zip")) + get(LIB.url_path("info")))
        data = await reader.read(1 << 16)
        os.truncate(_data_file(store), 300_000)
        async with asyncio.timeout(30):
            while chunk := await reader.read(1 << 16):
                data += chunk
        writer.close()
        answers = parse(data)
        assert len(answers) == 1 and not answers[0].complete
        assert answers[0].headers["x-router-upstream"] == "cache"


def _data_file(store: Path) -> Path:
    (found,) = (p for p in (store / "data").rglob("*") if p.is_file())
    return found


async def test_followers_of_a_zip_that_breaks_get_a_broken_body_not_a_second_answer(
    tmp_path: Path, up: FixtureProxy
) -> None:
    up.add_fault(Fault(pattern=r"big/@v/v1\.0\.0\.zip$", stall_after=300_000, stall=1.0, times=1))
    rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache={"memory": "16MiB"})
    async with gateway_in_process(rules) as gw:
        port = _port(gw.url)
        leader = asyncio.ensure_future(exchange(port, [get(BIG.url_path("zip"))]))
        await _until(lambda: up.count("big/@v/v1.0.0.zip") == 1)
        follower = await exchange(port, [get(BIG.url_path("zip")), get(LIB.url_path("info"))])
        for data in (follower, await leader):
            answers = parse(data)
            assert len(answers) == 1 and not answers[0].complete
        assert up.count("big/@v/v1.0.0.zip") == 1


# ------------------------------------------------------------------ a full disk


def _server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("where", ["store", "spool"])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_full_disk_never_puts_two_answers_on_one_connection(
    tmp_path: Path,
    up: FixtureProxy,
    where: str,
    scheme: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with small_fs(tmp_path / "fs", 4 << 20) as fs:
        cache: dict[str, Any] = {"memory": "16MiB"}
        if where == "store":
            cache["dir"] = str(fs / "store")
        else:
            monkeypatch.setenv("TMPDIR", str(fs))
            monkeypatch.setattr(tempfile, "tempdir", None)
        rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache=cache)
        server_tls, client_tls = _server_tls(tmp_path) if scheme == "https" else (None, None)
        async with gateway_in_process(rules, ssl_context=server_tls) as gw:
            fill(fs, leave=200_000)  # the zips arrive in 256 KiB pieces: the disk fills mid-body
            asked = [
                (BIG.url_path("zip"), module_zip_bytes(BIG)),
                (LIB.url_path("info"), info_json(LIB)),
                (LIB.url_path("mod"), LIB.go_mod),
                (BIG2.url_path("zip"), module_zip_bytes(BIG2)),
            ]
            with caplog.at_level(logging.ERROR, logger="goproxy_router.store"):
                for _ in range(2):
                    data = await exchange(
                        _port(gw.url), [get(p) for p, _ in asked], ssl_context=client_tls
                    )
                    answers = parse(data)
                    assert [a.status for a in answers] == [200] * 4, data[:400]
                    for (path, want), got in zip(asked, answers, strict=True):
                        assert got.complete and got.body == want, path
                    assert data.count(b"HTTP/1.1 ") == 4
            async with (
                aiohttp.ClientSession() as http,
                http.get(gw.url + "/readyz", ssl=client_tls or False) as resp,
            ):
                assert resp.status == 200
                assert "degraded" in await resp.text()
            tier = "disk" if where == "store" else "spool"
            assert await _metric_tls(gw.url, client_tls, "goproxy_router_storage_degraded", tier)
            failures = [r for r in caplog.records if "no space left" in r.getMessage()]
            assert len(failures) == 1  # once per cause per minute, not a line per request


async def _metric_tls(url: str, tls: ssl.SSLContext | None, name: str, tier: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", ssl=tls or False) as r:
        text = await r.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("tier") == tier:
                return sample.value
    return 0.0


async def test_a_checksum_tile_on_a_full_disk_is_answered_once_and_whole(
    tmp_path: Path, up: FixtureProxy
) -> None:
    tile = "/sumdb/sum.golang.org/tile/8/0/x001/234"
    up.sumdb_responses[tile] = bytes(range(256)) * 32
    with small_fs(tmp_path / "fs", 1 << 20) as fs:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"up": up.url},
            upstream_extra={"up": {"sumdb": ["sum.golang.org"]}},
            cache={"memory": "16MiB", "dir": str(fs / "store")},
        )
        async with gateway_in_process(rules) as gw:
            fill(fs, leave=4096)
            data = await exchange(_port(gw.url), [get(tile), get(LIB.url_path("info")), get(tile)])
            answers = parse(data)
            assert [(a.status, a.complete) for a in answers] == [(200, True)] * 3
            assert answers[0].body == answers[2].body == up.sumdb_responses[tile]
            assert answers[1].body == info_json(LIB)


# ------------------------------------------------------------------ slow readers


async def _stalled_download(port: int, path: str, source: str) -> tuple[int, asyncio.StreamReader]:
    """A client that asks for `path` from `source` with a tiny receive buffer, reads the
    status line and then nothing more: the answer's status and the unread stream."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(get(path))
    await writer.drain()
    line = await reader.readline()
    _OPEN.append(writer)
    return int(line.split()[1]), reader


_OPEN: list[asyncio.StreamWriter] = []  # stalled clients' sockets, closed by each test


@pytest.fixture(autouse=True)
async def _close_stalled() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


async def _dropped_within(reader: asyncio.StreamReader, length: int, within: float) -> bool:
    """Whether the gateway closes a stalled download before its end within `within`
    seconds (what it sent meanwhile is drained here at last, as a waking client would)."""
    got = 0
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(1 << 20):
                got += len(chunk)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return got < length


async def test_a_hundred_clients_that_never_read_do_not_starve_anyone(tmp_path: Path) -> None:
    zips = [large_module(f"example.com/huge{i}", "v1.0.0", 12_000_000, seed=i) for i in range(10)]
    metas = [simple_module(f"example.com/meta{i}", "v1.0.0") for i in range(30)]
    async with FixtureProxy(ModuleSet([*zips, *metas]), name="up") as up:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"up": up.url},
            # 14 connections leave 11 for downloads (a quarter is kept for metadata): the ten
            # zips are fetched at once, so none waits for a slot behind another's pace (with
            # fewer, the last ones got 503 whenever the first eight took over a second)
            upstream_extra={"up": {"max_connections": 14, "timeouts": {"connect": "1s"}}},
            cache={"memory": "16MiB"},
            server={"stall_timeout": "3s"},
        )
        async with gateway_in_process(rules) as gw:
            port = _port(gw.url)
            stalled = await asyncio.gather(
                *(
                    _stalled_download(port, zips[i % 10].url_path("zip"), f"127.0.1.{i + 1}")
                    for i in range(100)
                )
            )
            assert [s for s, _ in stalled] == [200] * 100
            async with aiohttp.ClientSession() as http:
                for m in metas:
                    began = time.monotonic()
                    async with http.get(gw.url + m.url_path("info")) as resp:
                        assert resp.status == 200, await resp.text()
                    assert time.monotonic() - began < 1.0
            # each zip was read from the upstream once, at its pace, not the clients'
            assert all(up.count(f"huge{i}/@v/v1.0.0.zip") == 1 for i in range(10))
            deadline = time.monotonic() + 30
            while await _metric(gw.url, "goproxy_router_stalled_clients_total") < 100:
                assert time.monotonic() < deadline, "stalled clients were never dropped"
                await asyncio.sleep(0.2)
            dropped = await asyncio.gather(
                *(_dropped_within(r, 12_000_000, 10.0) for _, r in stalled)
            )
            assert all(dropped)  # after the stall timeout, not at the end of the body


async def _slow_reader(reader: asyncio.StreamReader) -> None:
    """A client that keeps reading, slowly: never stalled, never done."""
    while await reader.read(16 << 10):
        await asyncio.sleep(0.2)


async def test_one_client_waits_for_its_share_of_downloads_then_gets_429(tmp_path: Path) -> None:
    zips = [large_module(f"example.com/share{i}", "v1.0.0", 4_000_000, seed=i) for i in range(4)]
    async with FixtureProxy(ModuleSet(zips), name="up") as up:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"up": up.url},
            server={"streams_per_client": 2, "stall_timeout": "1s"},
        )
        async with gateway_in_process(rules) as gw:
            port = _port(gw.url)
            held = [await _stalled_download(port, z.url_path("zip"), "127.0.2.1") for z in zips[:2]]
            assert [s for s, _ in held] == [200, 200]
            readers = [asyncio.ensure_future(_slow_reader(r)) for _, r in held]
            began = time.monotonic()
            third, third_body = await _status_and_line(port, zips[2].url_path("zip"), "127.0.2.1")
            assert third == 429 and time.monotonic() - began >= 0.9  # it waited its turn
            assert "2 (server.streams_per_client) were still running after 1s" in third_body
            other, _ = await _stalled_download(port, zips[3].url_path("zip"), "127.0.2.2")
            assert other == 200  # another client has its own share
            for task in readers:
                task.cancel()
            for writer in _OPEN[:2]:
                writer.close()
            again, _ = await _status_and_line(port, zips[2].url_path("zip"), "127.0.2.1")
            assert again == 200


async def _status_and_line(port: int, path: str, source: str) -> tuple[int, str]:
    """The status and the whole (short) body of one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(get(path) + b"")
    head = await reader.readuntil(b"\r\n\r\n")
    _OPEN.append(writer)
    status = int(head.split()[1])
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    body = await reader.readexactly(min(length, 4096)) if status != 200 else b""
    return status, body.decode()


async def test_without_spool_room_at_most_half_the_connections_serve_slow_clients(
    tmp_path: Path,
) -> None:
    # larger than the socket buffers (tcp_wmem's 4 MiB): a held download cannot end early
    zips = [large_module(f"example.com/nospool{i}", "v1.0.0", 12_000_000, seed=i) for i in range(3)]
    async with FixtureProxy(ModuleSet([*zips, LIB]), name="up") as up:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"up": up.url},
            upstream_extra={"up": {"max_connections": 4}},
            cache={"memory": 0, "spool": 0},
            server={"stall_timeout": "5s"},
        )
        async with gateway_in_process(rules) as gw:
            port = _port(gw.url)
            held = [
                await _stalled_download(port, z.url_path("zip"), f"127.0.3.{i + 1}")
                for i, z in enumerate(zips)
            ]
            assert [s for s, _ in held] == [200, 200, 503]
            async with (
                aiohttp.ClientSession() as http,
                http.get(gw.url + LIB.url_path("info")) as resp,
            ):
                assert resp.status == 200


# ------------------------------------------------------------------ bounded spools


class _Peak:
    """The most bytes seen under a folder, sampled on a thread while a test runs."""

    def __init__(self, root: Path) -> None:
        self.root, self.peak, self._stop = root, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, used_bytes(self.root))
            time.sleep(0.002)

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _download_all(url: str, paths: list[str]) -> list[bytes]:
    async with aiohttp.ClientSession() as http:

        async def one(path: str) -> bytes:
            async with http.get(url + path) as resp:
                assert resp.status == 200
                return await resp.read()

        return await asyncio.gather(*(one(p) for p in paths))


async def test_spools_stay_within_their_budget_and_go_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zips = [large_module(f"example.com/sp{i}", "v1.0.0", 1_000_000, seed=i) for i in range(8)]
    tmp = tmp_path / "tmp"
    (tmp / "goproxy-router-spools" / "999999999-dead").mkdir(parents=True)
    (tmp / "goproxy-router-spools" / "999999999-dead" / "leftover").write_bytes(b"x" * 1000)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    async with FixtureProxy(ModuleSet(zips), name="up") as up:
        up.add_fault(Fault(pattern=r"\.zip$", delay=0.2))
        rules = one_pool_rules(
            tmp_path / "r.yaml", {"up": up.url}, cache={"memory": 0, "spool": "3MiB"}
        )
        async with gateway_in_process(rules) as gw:
            spools = tmp / "goproxy-router-spools"
            assert not (spools / "999999999-dead").exists()  # a start removes a dead one's
            with _Peak(spools) as peak:
                bodies = await _download_all(gw.url, [z.url_path("zip") for z in zips])
            assert bodies == [module_zip_bytes(z) for z in zips]
            assert 0 < peak.peak <= 3 << 20
            await _until(lambda: used_bytes(spools) == 0)  # gone once read


async def test_the_disk_budget_counts_zips_still_being_written(tmp_path: Path) -> None:
    zips = [large_module(f"example.com/d{i}", "v1.0.0", 2_000_000, seed=i) for i in range(6)]
    store = tmp_path / "store"
    async with FixtureProxy(ModuleSet(zips), name="up") as up:
        up.add_fault(Fault(pattern=r"\.zip$", delay=0.2))
        budget = 5 << 20
        rules = one_pool_rules(
            tmp_path / "r.yaml", {"up": up.url}, cache={"dir": str(store), "disk": budget}
        )
        async with gateway_in_process(rules) as gw:
            with _Peak(store) as peak:
                bodies = await _download_all(gw.url, [z.url_path("zip") for z in zips])
            assert bodies == [module_zip_bytes(z) for z in zips]
            assert peak.peak <= budget + (64 << 10)  # index files are a few hundred bytes


# ------------------------------------------------------------------ hostile zips


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    out = BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
        warnings.simplefilter("ignore")  # a duplicate name is the point of one case
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _bomb(prefix: str) -> bytes:
    """1 GiB of zeros in about a megabyte: more than Go's 500 MiB."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(prefix + "zeros.bin", (2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 22)
            for _ in range(256):
                fh.write(block)
    return out.getvalue()


P = "example.com/lib@v1.0.0/"
HOSTILE = {
    "traversal": [(P + "go.mod", b"module example.com/lib\n"), (P + "../../../../tmp/x", b"x")],
    "absolute": [(P + "go.mod", b"module example.com/lib\n"), (P + "/etc/passwd", b"x")],
    "duplicate": [(P + "a.go", b"package lib\n"), (P + "a.go", b"package lib // 2\n")],
    "case": [(P + "A.go", b"package lib\n"), (P + "a.go", b"package lib\n")],
    "nested": [(P + "go.mod", b"module example.com/lib\n"), (P + "sub/go.mod", b"module x\n")],
    "gomod_case": [(P + "GO.MOD", b"module example.com/lib\n")],
    "outside": [(P + "go.mod", b"module example.com/lib\n"), ("other@v1.0.0/x.go", b"x")],
}


@pytest.mark.parametrize("name", [*HOSTILE, "bomb"])
async def test_a_zip_breaking_gos_rules_is_served_as_sent_but_never_kept(
    tmp_path: Path, name: str
) -> None:
    body = _bomb(P) if name == "bomb" else _zip(HOSTILE[name])
    async with FixtureProxy(ModuleSet([LIB]), name="up") as up:
        up.add_fault(Fault(pattern=r"lib/@v/v1\.0\.0\.zip$", body=body, content_type=CT_ZIP))
        store = tmp_path / "store"
        rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache={"dir": str(store)})
        async with gateway_in_process(rules) as gw:
            for n in (1, 2):
                (got,) = await _download_all(gw.url, [LIB.url_path("zip")])
                assert got == body  # the go command checks too; other consumers may not
                while await _metric(gw.url, "goproxy_router_bad_zips_total", upstream="up") < n:
                    await asyncio.sleep(0.02)  # checked behind the answer
            assert up.count("lib/@v/v1.0.0.zip") == 2  # never a cache hit
            assert not list((store / "index").iterdir())


@pytest.mark.parametrize("name", ["traversal", "bomb"])
async def test_with_bad_zips_refused_the_client_gets_a_502_naming_the_problem(
    tmp_path: Path, name: str
) -> None:
    body = _bomb(P) if name == "bomb" else _zip(HOSTILE[name])
    async with FixtureProxy(ModuleSet([LIB]), name="up") as up:
        up.add_fault(Fault(pattern=r"lib/@v/v1\.0\.0\.zip$", body=body, content_type=CT_ZIP))
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"up": up.url},
            cache={"dir": str(tmp_path / "store"), "bad_zips": "refuse"},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            async with http.get(gw.url + LIB.url_path("zip")) as resp:
                text = await resp.text()
                assert resp.status == 502
                assert text.startswith("upstream up: bad module zip: ")
                assert ("500" in text) if name == "bomb" else ("not clean" in text or ".." in text)
            async with http.get(gw.url + LIB.url_path("info")) as resp:
                assert resp.status == 200


# ------------------------------------------------------------------ a hung Redis


async def test_a_hung_redis_costs_requests_nothing(tmp_path: Path, redis_server: Any) -> None:
    metas = [simple_module(f"example.com/r{i}", "v1.0.0") for i in range(40)]
    async with FixtureProxy(ModuleSet(metas), name="up") as up:
        rules = one_pool_rules(tmp_path / "r.yaml", {"up": up.url}, cache={"memory": "16MiB"})
        # each Redis call may take 1 s, not 0.1 s: a request that waited for the hung Redis
        # takes that second, one that skipped it some milliseconds (a slow machine's lag
        # stays far below the 0.5 s line; 0.1 s was within its reach)
        async with (
            gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=1.0) as gw,
            aiohttp.ClientSession() as http,
        ):

            async def info(m: Any) -> float:
                began = time.monotonic()
                async with http.get(gw.url + m.url_path("info")) as resp:
                    assert resp.status == 200
                return time.monotonic() - began

            await info(metas[0])  # Redis answers: the shared tier is used
            assert redis_server.proc is not None
            pid = redis_server.proc.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                slow = [await info(m) for m in metas[1:21]]
                # the shared tier's calls (the selection sync fails too, in the background,
                # a few times a second: how many depends on how long these requests took)
                errors = sum(
                    [
                        await _metric(gw.url, "goproxy_router_redis_errors_total", op=op)
                        for op in ("meta_get", "meta_put", "meta_forget", "lock", "unlock")
                    ]
                )
                assert errors <= 2  # the first timeout opens the breaker; then no waits
                assert sum(1 for s in slow if s > 0.5) <= 1, slow
                assert await _metric(gw.url, "goproxy_router_redis_breaker_open") == 1
            finally:
                os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 10
            while await _metric(gw.url, "goproxy_router_redis_breaker_open") != 0:
                assert time.monotonic() < deadline, "the breaker never closed"
                await asyncio.sleep(0.05)
            await info(metas[30])
            await _until(lambda: _meta_keys(redis_server.port) >= 2)  # written again


def _meta_keys(port: int) -> int:
    import redis

    client = redis.Redis(port=port)
    try:
        return len(client.keys("goproxy-router:meta:*"))
    finally:
        client.close()


# ------------------------------------------------------------------ helpers


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _until_kept(store: Path) -> None:
    await _until(lambda: any((store / "index").glob("*.json")))


async def test_a_client_that_stops_reading_a_stored_zip_is_dropped_and_the_rest_is_whole(
    tmp_path: Path, up: FixtureProxy
) -> None:
    # a stored zip goes straight from the page cache to the socket (sendfile), at the
    # client's pace: one that stops reading is dropped after the stall timeout, one that
    # reads gets every byte
    store = tmp_path / "store"
    rules = one_pool_rules(
        tmp_path / "r.yaml",
        {"up": up.url},
        cache={"dir": str(store)},
        server={"stall_timeout": "1s"},
    )
    async with gateway_in_process(rules) as gw:
        port = _port(gw.url)
        await exchange(port, [get(HUGE.url_path("zip"))])
        await _until_kept(store)
        status, stalled = await _stalled_download(port, HUGE.url_path("zip"), "127.0.4.1")
        assert status == 200
        deadline = time.monotonic() + 10
        while await _metric(gw.url, "goproxy_router_stalled_clients_total") < 1:
            assert time.monotonic() < deadline, "the stalled client was never dropped"
            await asyncio.sleep(0.05)
        assert await _dropped_within(stalled, 12_000_000, 5.0)
        whole = parse(await exchange(port, [get(HUGE.url_path("zip")), get(LIB.url_path("info"))]))
        assert [a.complete for a in whole] == [True, True]
        assert whole[0].body == module_zip_bytes(HUGE)
        assert whole[0].headers["x-router-upstream"] == "cache"
