"""Rules that change live: valid changes take effect, invalid ones are refused, and no
request fails while it happens."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web
from support.gateway import GatewayProcess, gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy

from router.appkeys import METRICS

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


async def _until(predicate: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("reload did not take effect within 3 s")


def test_sighup_reloads_and_the_process_keeps_serving(tmp_path: Path) -> None:
    a = FixtureProxy(ModuleSet([LIB]), name="a").start_in_thread()
    try:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"a": a.url})
        gw = GatewayProcess(rules)
        gw.wait_ready()
        try:
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
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
