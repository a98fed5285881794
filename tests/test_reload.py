"""Rules that change live: valid changes take effect, invalid ones are refused, and no
request fails while it happens."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support.clock import Clock
from support.gateway import GatewayProcess, gateway_in_process, one_pool_rules, until_equal
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy

from router.appkeys import ACCESS_LOG, METRICS, RELOADER
from router.core.model import Cache, CacheTTL, Jobs, Logging, Rules, Server
from router.core.restart import RESTART_ONLY, restart_only_changes

LIB = simple_module("example.com/lib", "v0.1.0")
PATHS = [
    "/example.com/lib/@v/v0.1.0.mod",
    "/example.com/lib/@v/v0.1.0.zip",
    "/example.com/lib/@v/list",
]


def _counter(app: web.Application, result: str) -> float:
    return float(app[METRICS].rules_reloads.labels(result)._value.get())


async def test_twenty_reloads_under_load_lose_no_request(tmp_path: Path) -> None:
    a = FixtureProxy(ModuleSet([LIB]), name="a")
    b = FixtureProxy(ModuleSet([LIB]), name="b")
    async with a, b:
        rules = tmp_path / "rules.yaml"
        urls = {"a": a.url, "b": b.url}
        one_pool_rules(rules, urls)
        async with gateway_in_process(rules, watch=True) as gw, aiohttp.ClientSession() as http:
            assert gw.app is not None
            failures: list[str] = []
            served_by: list[str] = []
            stop = asyncio.Event()

            async def client(n: int) -> None:
                i = n
                while not stop.is_set():
                    path = PATHS[i % len(PATHS)]
                    i += 1
                    try:
                        async with http.get(gw.url + path) as resp:
                            await resp.read()
                            if resp.status != 200:
                                failures.append(f"{path}: {resp.status}")
                            served_by.append(resp.headers["X-Router-Upstream"])
                    except aiohttp.ClientError as exc:
                        failures.append(f"{path}: {exc!r}")

            clients = [asyncio.create_task(client(n)) for n in range(6)]
            order = [("b", "a"), ("a", "b")]
            for i in range(20):
                if i % 2:
                    before = _counter(gw.app, "invalid")
                    rules.write_text(
                        f"version: 1\nupstreams: [{{name: broken, url: 'ftp://x'}}]\n# {i}\n"
                    )
                    await _until(lambda b=before: _counter(gw.app, "invalid") > b)
                else:
                    first, second = order[(i // 2) % 2]
                    one_pool_rules(rules, {first: urls[first], second: urls[second]})
                    served_by.clear()
                    await _until(lambda f=first: served_by[-3:] == [f] * 3)
            stop.set()
            await asyncio.gather(*clients)
            assert failures == []
            assert _counter(gw.app, "ok") == 10
            assert _counter(gw.app, "invalid") == 10
            async with http.get(gw.url + "/readyz") as resp:
                assert resp.status == 200


async def _until(predicate: object, timeout: float = 30.0) -> None:
    # about half a second (the watch interval) here; what is checked is that no request
    # fails, not how soon a reload takes effect
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"reload did not take effect within {timeout:g} s")


def test_sighup_reloads_and_the_process_keeps_serving(tmp_path: Path) -> None:
    a = FixtureProxy(ModuleSet([LIB]), name="a").start_in_thread()
    try:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"a": a.url})
        gw = GatewayProcess(rules)
        gw.wait_ready()
        try:
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            text = ""
            while time.monotonic() < deadline:
                with urllib.request.urlopen(gw.url + "/metrics", timeout=2) as resp:
                    text = resp.read().decode()
                if 'goproxy_router_rules_reloads_total{result="ok"} 1.0' in text:
                    break
                time.sleep(0.05)
            assert 'goproxy_router_rules_reloads_total{result="ok"} 1.0' in text
            with urllib.request.urlopen(gw.url + PATHS[0], timeout=5) as resp:
                assert resp.status == 200
        finally:
            assert gw.stop() == 0
    finally:
        a.stop()


async def test_a_reload_applies_cache_lifetimes_and_the_access_log_and_names_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    other = [simple_module("example.com/other", "v1.0.0")]
    async with FixtureProxy(ModuleSet([LIB, *other]), name="a") as a:
        rules = tmp_path / "rules.yaml"
        cache: dict[str, Any] = {"memory": "16MiB", "ttl": {"list": "1h"}}
        one_pool_rules(rules, {"a": a.url}, cache=cache)
        async with (
            gateway_in_process(rules, watch=True, clock=clock) as gw,
            aiohttp.ClientSession() as http,
        ):
            assert gw.app is not None
            reloader = gw.app[RELOADER]
            assert reloader is not None

            async def listed() -> str:
                async with http.get(gw.url + "/example.com/other/@v/list") as resp:
                    return await resp.text()

            cache = {"memory": "32MiB", "ttl": {"list": "10s"}}
            one_pool_rules(rules, {"a": a.url}, cache=cache, logging={"access": False})
            with caplog.at_level(logging.WARNING, logger="goproxy_router.reload"):
                assert await reloader.reload("test")
            assert (
                "cache.memory: changed since this process started; applied on restart only"
                in caplog.text
            )
            assert gw.app[ACCESS_LOG].enabled is False

            assert await listed() == "v1.0.0\n"  # kept for the new 10 s, not an hour
            a.modules.add(simple_module("example.com/other", "v1.1.0"))
            clock.advance(20)
            assert await listed() == "v1.0.0\n"  # stale: served while it is refreshed
            await until_equal(listed, "v1.0.0\nv1.1.0\n")

            caplog.clear()  # back to the size it started with: nothing waits any more
            cache = {"memory": "16MiB", "ttl": {"list": "10s"}}
            one_pool_rules(rules, {"a": a.url}, cache=cache)
            with caplog.at_level(logging.WARNING, logger="goproxy_router.reload"):
                assert await reloader.reload("test")
            assert "restart" not in caplog.text
            assert gw.app[ACCESS_LOG].enabled is True


def test_only_what_the_process_built_at_start_waits_for_a_restart() -> None:
    base = Rules(upstreams=(), pools=())
    changed = Rules(
        upstreams=(),
        pools=(),
        listen="0.0.0.0:9000",
        cache=Cache(memory=1 << 20, ttl=CacheTTL(list=5.0), stale_if_error=10.0),
        server=Server(stall_timeout=5.0, header_timeout=2.0),
        logging=Logging(level="debug", access=False, sample=0.5),
        jobs=Jobs(ttl=60.0),
    )
    assert restart_only_changes(base, base) == []
    assert restart_only_changes(base, changed) == [
        "listen",
        "cache.memory",
        "server.header_timeout",
        "logging.level",
    ]


def test_the_readme_names_every_setting_that_waits_for_a_restart() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    live = readme[readme.index("**Rules that change live.**") :][:2000]
    for section, name in RESTART_ONLY:
        assert f"`{section if name is None else f'{section}.{name}'}`" in live
