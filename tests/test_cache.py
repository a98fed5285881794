"""Caching end to end: hits, lifetimes, stale serving, negatives, pools, coalescing,
the artifact store across restarts and crashes, budgets and purges."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.clock import Clock
from support.gateway import (
    GatewayProcess,
    RunningGateway,
    gateway_in_process,
    wait_for,
    write_rules,
)
from support.gomod import ModuleSet, hash_zip, large_module, module_zip_bytes, simple_module
from support.goproxy_server import Fault, FixtureProxy

from router.appkeys import ANSWERS
from router.core.lifetimes import cache_key
from router.core.protocol import parse_request_target
from router.fleet.client import connect
from router.fleet.keys import PURGE_CHANNEL

LIB = simple_module("example.com/lib", "v1.0.0")
LIB2 = simple_module("example.com/lib", "v1.1.0")
BIG = large_module("example.com/big", "v1.0.0", 2_000_000)


async def _until_cached(http: aiohttp.ClientSession, url: str, timeout: float = 5.0) -> bytes:
    """Ask until the answer comes from the store (the zip is kept behind its first answer;
    meanwhile requests follow the fetch that keeps it, never the upstream)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, headers = await _get(http, url)
        assert status == 200
        if headers["X-Router-Upstream"] == "cache":
            return body
        assert time.monotonic() < deadline, "the zip was never kept"
        await asyncio.sleep(0.02)


def _rules(path: Path, url: str, **cache: Any) -> Path:
    return write_rules(
        path,
        [{"name": "up", "url": url, "timeouts": {"first_byte": "2s", "idle": "2s"}}],
        {"main": {"upstreams": ["up"]}},
        default={"pool": "main"},
        cache=cache,
    )


def _list_of(gw: RunningGateway, module: str) -> bytes | None:
    """The @v/list the gateway's memory tier holds for `module` (pool main), if any."""
    assert gw.app is not None
    answers = gw.app[ANSWERS]
    assert answers is not None and answers.tiers.memory is not None
    key = cache_key(parse_request_target(f"/{module}/@v/list"), "main", private=False)
    look = answers.tiers.memory.get(key, 0.0)
    return look.entry.body if look is not None else None


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers


@pytest.fixture
async def up() -> AsyncIterator[FixtureProxy]:
    async with FixtureProxy(ModuleSet([LIB, BIG]), name="up") as proxy:
        yield proxy


async def test_hit_after_miss_carries_age_and_cache_header(
    tmp_path: Path, up: FixtureProxy
) -> None:
    async with (
        gateway_in_process(_rules(tmp_path / "r.yaml", up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        for path in (
            "/example.com/lib/@v/v1.0.0.info",
            "/example.com/lib/@v/v1.0.0.mod",
            "/example.com/lib/@v/list",
            "/example.com/lib/@latest",
        ):
            s1, b1, h1 = await _get(h, gw.url + path)
            s2, b2, h2 = await _get(h, gw.url + path)
            assert (s1, s2, b1) == (200, 200, b2)
            assert h1["X-Router-Upstream"] == "up"
            assert h2["X-Router-Upstream"] == "cache"
            assert int(h2["Age"]) >= 0
            assert h2["Content-Type"] == h1["Content-Type"]
            assert up.count(path) == 1


async def test_list_ttl_then_stale_while_revalidate(tmp_path: Path, up: FixtureProxy) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url, ttl={"list": "5m", "latest": "5m"})
    clock = Clock()
    async with gateway_in_process(rules, clock=clock) as gw, aiohttp.ClientSession() as h:
        url = gw.url + "/example.com/lib/@v/list"
        assert (await _get(h, url))[1] == b"v1.0.0\n"
        up.modules.add(LIB2)
        clock.advance(299)
        assert (await _get(h, url))[1] == b"v1.0.0\n"  # fresh: from cache
        clock.advance(2)
        stale = await asyncio.gather(*(_get(h, url) for _ in range(4)))
        status, body, headers = stale[0]  # stale: served at once, refreshed behind
        assert (status, body, headers["X-Router-Upstream"]) == (200, b"v1.0.0\n", "cache")
        assert all(s == 200 and hd["X-Router-Upstream"] == "cache" for s, _, hd in stale)
        await wait_for(lambda: _list_of(gw, "example.com/lib") == b"v1.0.0\nv1.1.0\n")
        assert (await _get(h, url))[1] == b"v1.0.0\nv1.1.0\n"
        assert up.count("/@v/list") == 2  # one refresh, however many stale hits


async def test_stale_if_error_when_every_upstream_fails(tmp_path: Path, up: FixtureProxy) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url, ttl={"latest": "1m"}, stale_if_error="1h")
    clock = Clock()
    async with gateway_in_process(rules, clock=clock) as gw, aiohttp.ClientSession() as h:
        url = gw.url + "/example.com/lib/@latest"
        status, body, _ = await _get(h, url)
        assert status == 200
        up.add_fault(Fault(status=503))
        clock.advance(61)
        for _ in range(3):
            s, b, hdr = await _get(h, url)
            assert (s, b, hdr["X-Router-Upstream"]) == (200, body, "cache")
        clock.advance(3600)
        assert (await _get(h, url))[0] == 502  # grace over: the error shows


async def test_not_found_is_cached_briefly_and_5xx_never(tmp_path: Path, up: FixtureProxy) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url, ttl={"not_found": "1m"})
    clock = Clock()
    async with gateway_in_process(rules, clock=clock) as gw, aiohttp.ClientSession() as h:
        missing = gw.url + "/example.com/missing/@v/list"
        assert (await _get(h, missing))[0] == 404
        status, _, headers = await _get(h, missing)
        assert (status, headers["X-Router-Upstream"]) == (404, "cache")
        assert up.count("example.com/missing") == 1
        clock.advance(61)
        assert (await _get(h, missing))[0] == 404
        assert up.count("example.com/missing") == 2
        up.add_fault(Fault(pattern=r"\.mod$", status=500, times=1))
        assert (await _get(h, gw.url + "/example.com/lib/@v/v1.0.0.mod"))[0] == 502
        assert (await _get(h, gw.url + "/example.com/lib/@v/v1.0.0.mod"))[0] == 200


async def test_truncated_zip_is_never_cached(tmp_path: Path, up: FixtureProxy) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url, dir=str(tmp_path / "store"))
    async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
        url = gw.url + "/example.com/big/@v/v1.0.0.zip"
        up.add_fault(Fault(pattern=r"\.zip$", truncate_at=500_000, times=1))
        with pytest.raises(aiohttp.ClientPayloadError):
            await _get(h, url)
        status, body, headers = await _get(h, url)
        assert status == 200 and headers["X-Router-Upstream"] == "up"
        assert hash_zip(body) == hash_zip(module_zip_bytes(BIG))
        await _until_cached(h, url)  # kept once checked, behind the answer
        assert up.count(".zip") == 2


async def test_no_answer_crosses_pools(tmp_path: Path) -> None:
    x = FixtureProxy(ModuleSet([LIB]), name="x")
    y = FixtureProxy(ModuleSet([LIB, LIB2]), name="y")
    async with x, y:
        rules = write_rules(
            tmp_path / "r.yaml",
            [{"name": "x", "url": x.url}, {"name": "y", "url": y.url}],
            {"px": {"upstreams": ["x"]}, "py": {"upstreams": ["y"]}},
            tenants=[{"id": "t1", "pool": "px"}, {"id": "t2", "pool": "py"}],
            default={"pool": "px"},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
            path = gw.url + "/example.com/lib/@v/list"
            for tenant, body in (
                ("t1", b"v1.0.0\n"),
                ("t2", b"v1.0.0\nv1.1.0\n"),
                ("t1", b"v1.0.0\n"),
                ("t2", b"v1.0.0\nv1.1.0\n"),
            ):
                async with h.get(path, headers={"X-Tenant-ID": tenant}) as resp:
                    assert await resp.read() == body
            info = gw.url + "/example.com/lib/@v/v1.0.0.info"
            for tenant in ("t1", "t2"):
                async with h.get(info, headers={"X-Tenant-ID": tenant}) as resp:
                    assert resp.headers["X-Router-Upstream"] == ("x" if tenant == "t1" else "y")


async def test_hundred_identical_misses_make_one_upstream_request(
    tmp_path: Path, up: FixtureProxy
) -> None:
    up.add_fault(Fault(pattern=r"\.(info|zip)$", delay=0.3))
    async with (
        gateway_in_process(_rules(tmp_path / "r.yaml", up.url)) as gw,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as h,
    ):
        results = await asyncio.gather(
            *(_get(h, gw.url + "/example.com/lib/@v/v1.0.0.info") for _ in range(100))
        )
        assert {(s, b) for s, b, _ in results} == {(200, results[0][1])}
        assert up.count("v1.0.0.info") == 1
        zips = await asyncio.gather(
            *(_get(h, gw.url + "/example.com/big/@v/v1.0.0.zip") for _ in range(20))
        )
        expected = hash_zip(module_zip_bytes(BIG))
        assert all(s == 200 and hash_zip(b) == expected for s, b, _ in zips)
        assert up.count("big/@v/v1.0.0.zip") == 1
        async with h.get(gw.url + "/metrics") as resp:
            assert "goproxy_router_coalesced_requests_total 118.0" in await resp.text()


async def test_two_replicas_with_one_redis_make_one_upstream_request(
    tmp_path: Path, up: FixtureProxy, redis_server: Any
) -> None:
    up.add_fault(Fault(pattern=r"\.info$", delay=0.3))
    rules = _rules(tmp_path / "r.yaml", up.url)
    async with (  # both share this test's event loop: its lag is not Redis's
        gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as g1,
        gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as g2,
        aiohttp.ClientSession() as h,
    ):
        path = "/example.com/lib/@v/v1.0.0.info"
        results = await asyncio.gather(
            *(_get(h, g.url + path) for g in (g1, g2) for _ in range(10))
        )
        assert {s for s, _, _ in results} == {200}
        assert len({b for _, b, _ in results}) == 1
        assert up.count("v1.0.0.info") == 1


async def test_replica_that_just_started_uses_the_shared_tier(
    tmp_path: Path, up: FixtureProxy, redis_server: Any
) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url)
    key = cache_key(parse_request_target("/example.com/lib/@v/list"), "main", private=False)
    async with (  # a Redis call slower than 0.1 s (a loaded machine) would be a miss
        gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as g1,
        aiohttp.ClientSession() as h,
    ):
        assert (await _get(h, g1.url + "/example.com/lib/@v/list"))[0] == 200
        assert g1.app is not None
        shared = g1.app[ANSWERS].tiers.shared
        assert shared is not None
        deadline = time.monotonic() + 30
        while await shared.get(key) is None:  # the shared write happens behind the answer
            assert time.monotonic() < deadline, "the list never reached Redis"
            await asyncio.sleep(0.02)
    async with (
        gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as g2,
        aiohttp.ClientSession() as h,
    ):
        status, body, headers = await _get(h, g2.url + "/example.com/lib/@v/list")
        assert (status, body, headers["X-Router-Upstream"]) == (200, b"v1.0.0\n", "cache")
    assert up.count("/@v/list") == 1


async def test_artifact_store_survives_a_restart(tmp_path: Path, up: FixtureProxy) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url, dir=str(tmp_path / "store"))
    url_path = "/example.com/big/@v/v1.0.0.zip"
    async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
        status, first, _ = await _get(h, gw.url + url_path)
        assert status == 200
        await _get(h, gw.url + "/example.com/lib/@v/v1.0.0.mod")
    up.add_fault(Fault(status=500))  # every upstream down from here on
    async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
        status, again, headers = await _get(h, gw.url + url_path)
        assert (status, headers["X-Router-Upstream"]) == (200, "cache")
        assert again == first
        assert int(headers["Content-Length"]) == len(first)
        status, mod, _ = await _get(h, gw.url + "/example.com/lib/@v/v1.0.0.mod")
        assert (status, mod) == (200, LIB.mod)
    assert up.count(".zip") == 1


def test_kill_9_during_a_write_never_serves_a_partial_artifact(tmp_path: Path) -> None:
    proxy = FixtureProxy(ModuleSet([BIG]), name="slow").start_in_thread()
    store = tmp_path / "store"
    try:
        proxy.add_fault(Fault(pattern=r"\.zip$", stall_after=700_000, stall=30.0, times=1))
        rules = _rules(tmp_path / "r.yaml", proxy.url, dir=str(store))
        gw = GatewayProcess(rules)
        gw.wait_ready()
        url = gw.url + "/example.com/big/@v/v1.0.0.zip"

        def download() -> None:
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    resp.read()
            except Exception:
                pass

        threading.Thread(target=download, daemon=True).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spools = list((store / "tmp").glob("*")) if (store / "tmp").exists() else []
            if spools and spools[0].stat().st_size > 0:
                break
            time.sleep(0.02)
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait()
        gw2 = GatewayProcess(rules)
        gw2.wait_ready()
        try:
            url = gw2.url + "/example.com/big/@v/v1.0.0.zip"
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = resp.read()
                assert resp.headers["X-Router-Upstream"] == "up"  # fetched again, not served
            assert hash_zip(body) == hash_zip(module_zip_bytes(BIG))
            deadline = time.monotonic() + 5  # the commit ends just after the last byte
            while list((store / "tmp").glob("*")) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert list((store / "tmp").glob("*")) == []
            assert proxy.count(".zip") == 2
        finally:
            gw2.stop()
    finally:
        proxy.stop()


async def test_memory_and_disk_stay_within_their_budgets(tmp_path: Path) -> None:
    mods = [
        simple_module(f"example.com/m{i}", "v1.0.0", extra_files={"pad.txt": b"x" * 3000})
        for i in range(60)
    ]
    bigs = [large_module(f"example.com/b{i}", "v1.0.0", 1_000_000) for i in range(5)]
    async with FixtureProxy(ModuleSet([*mods, *bigs]), name="up") as up:
        rules = _rules(
            tmp_path / "r.yaml", up.url, memory="64KiB", dir=str(tmp_path / "s"), disk="3MB"
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
            assert gw.app is not None
            answers = gw.app[ANSWERS]
            assert (
                answers is not None
                and answers.tiers.memory is not None
                and answers.tiers.store is not None
            )
            for m in mods:
                for kind in ("info", "list"):
                    path = f"/{m.path}/@v/v1.0.0.info" if kind == "info" else f"/{m.path}/@v/list"
                    assert (await _get(h, gw.url + path))[0] == 200
                assert answers.tiers.memory.used_bytes <= 64 << 10
            store = answers.tiers.store
            for b in bigs:
                assert (await _get(h, f"{gw.url}/{b.path}/@v/v1.0.0.zip"))[0] == 200
                # kept behind the answer: wait until it is (no spool holds room any more),
                # so each zip meets a store holding the ones before, at any machine's pace
                await wait_for(lambda: store.reserved == 0, timeout=30)
            assert 0 < answers.tiers.store.used_bytes <= 3_000_000
            assert answers.tiers.store.evictions >= 2
            assert answers.tiers.memory.evictions > 0


async def test_purge_drops_mutable_entries(tmp_path: Path, up: FixtureProxy) -> None:
    async with (
        gateway_in_process(_rules(tmp_path / "r.yaml", up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        url = gw.url + "/example.com/lib/@v/list"
        assert (await _get(h, url))[1] == b"v1.0.0\n"
        assert (await _get(h, gw.url + "/example.com/lib/@v/v1.1.0.info"))[0] == 404
        up.modules.add(LIB2)
        assert (await _get(h, url))[1] == b"v1.0.0\n"
        async with h.post(gw.url + "/debug/purge?module=example.com/lib") as resp:
            assert resp.status == 200
            assert (await resp.json())["dropped"] == 2
        assert (await _get(h, url))[1] == b"v1.0.0\nv1.1.0\n"
        assert (await _get(h, gw.url + "/example.com/lib/@v/v1.1.0.info"))[0] == 200
        async with h.post(gw.url + "/debug/purge?module=..%2Fbad") as resp:
            assert resp.status == 400


async def test_purge_cli_reaches_every_replica(
    tmp_path: Path, up: FixtureProxy, redis_server: Any
) -> None:
    rules = _rules(tmp_path / "r.yaml", up.url)
    async with (
        gateway_in_process(rules, redis_url=redis_server.url) as g1,
        gateway_in_process(rules, redis_url=redis_server.url) as g2,
        aiohttp.ClientSession() as h,
    ):
        for g in (g1, g2):
            assert (await _get(h, g.url + "/example.com/lib/@v/list"))[1] == b"v1.0.0\n"
        up.modules.add(LIB2)
        await _until_subscribed(redis_server.url, 2)  # both purge listeners
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "purge",
            "example.com/lib",
            "--redis",
            redis_server.url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        deadline = time.monotonic() + 30
        bodies: list[bytes] = []
        while time.monotonic() < deadline:
            bodies = [(await _get(h, g.url + "/example.com/lib/@v/list"))[1] for g in (g1, g2)]
            if bodies == [b"v1.0.0\nv1.1.0\n"] * 2:
                break
            await asyncio.sleep(0.05)
        assert bodies == [b"v1.0.0\nv1.1.0\n"] * 2


async def _until_subscribed(url: str, listeners: int) -> None:
    """Poll Redis until `listeners` connections listen for purges (each gateway's
    listener subscribes behind its start)."""
    client = connect(url, socket_timeout=None)

    async def subscribed() -> int:
        counts = dict(await client.pubsub_numsub(PURGE_CHANNEL))
        return int(counts.get(PURGE_CHANNEL.encode(), 0))

    try:
        deadline = time.monotonic() + 30
        while await subscribed() < listeners:
            assert time.monotonic() < deadline, "the purge listeners never subscribed"
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def test_sha_of_large_module_is_stable() -> None:  # guards the fixtures the tests above rely on
    assert (
        hashlib.sha256(module_zip_bytes(BIG)).hexdigest()
        == hashlib.sha256(module_zip_bytes(BIG)).hexdigest()
    )
