"""Smart selection in the running gateway, against real upstreams and a real Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from support.gateway import GatewayProcess, gateway_in_process, until_equal, write_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import Fault, FixtureProxy

MODULES = [simple_module(f"example.com/m{i}", "v1.0.0") for i in range(20)]
FAST_SELECTION = {
    "probe_interval": "200ms",
    "rtt_decay": "1s",
    "ejection": {"consecutive_failures": 5, "base": "1s", "max": "4s"},
}


def _rules(path: Path, urls: dict[str, str], **selection: Any) -> Path:
    sel = {**FAST_SELECTION, **selection}
    return write_rules(
        path,
        [{"name": n, "url": u, "cost_per_gb": 0.01} for n, u in urls.items()],
        {"main": {"upstreams": list(urls), "fallback": "any-error"}},
        default={"pool": "main"},
        selection=sel,
        cache={"memory": 0},
    )


async def _share(http: aiohttp.ClientSession, url: str, n: int = 60) -> Counter[str]:
    got: Counter[str] = Counter()
    for i in range(n):
        m = MODULES[i % len(MODULES)]
        async with http.get(f"{url}/{m.path}/@v/v1.0.0.info") as resp:
            assert resp.status == 200
            got[resp.headers["X-Router-Upstream"]] += 1
    return got


# The acceptance tests below count who served what in wide time windows, far from the
# edges where a decision changes (what they check takes about a second; the windows
# allow five or more). Every request is of a file never asked before, so heat from one
# phase cannot carry into the next, and every delay is 100 ms or more.
DISTINCT = [simple_module(f"example.com/d{i}", "v1.0.0") for i in range(400)]


class Pacer:
    """Sequential requests of distinct immutable files (a module's .info, then its .mod),
    one every `every` seconds at most, each noted with its start time since `t0`."""

    def __init__(self, http: aiohttp.ClientSession, url: str, every: float = 0.02) -> None:
        self.http, self.url, self.every = http, url, every
        self.t0 = time.monotonic()
        self.seen: list[tuple[float, str]] = []
        self.files = (f"{m.path}/@v/v1.0.0.{ext}" for m in DISTINCT for ext in ("info", "mod"))

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, *, n: int | None = None, until: float | None = None) -> None:
        done = 0
        while (n is None or done < n) and (until is None or self.now() < until):
            began = self.now()
            async with self.http.get(f"{self.url}/{next(self.files)}") as resp:
                assert resp.status == 200
                self.seen.append((began, resp.headers["X-Router-Upstream"]))
            done += 1
            await asyncio.sleep(max(0.0, began + self.every - self.now()))

    def served(self, start: float, end: float) -> Counter[str]:
        return Counter(who for t, who in self.seen if start <= t < end)


def _acceptance_rules(path: Path, urls: dict[str, str]) -> Path:
    return _rules(
        path, urls, mode="best", probe_interval="1s", rtt_decay="1s", weights=DEFAULT_WEIGHTS
    )


DEFAULT_WEIGHTS = {"rtt": 0.40, "cost": 0.35, "heat": 0.25}


async def test_cold_start_the_fast_upstream_serves_after_the_first_two_seconds(
    tmp_path: Path,
) -> None:
    # The slow upstream is first in the pool: a gateway that guessed would start there.
    slow = FixtureProxy(ModuleSet(DISTINCT), name="slow")
    fast = FixtureProxy(ModuleSet(DISTINCT), name="fast")
    slow.add_fault(Fault(delay=0.12))
    async with slow, fast:
        urls = {"slow": slow.url, "fast": fast.url}  # the defaults, but for the mode
        rules = _rules(
            tmp_path / "r.yaml", urls, mode="best", probe_interval="10s", rtt_decay="10s"
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            pace = Pacer(http, gw.url, every=0.05)
            await pace.run(n=90)
    late = pace.served(2.0, float("inf"))
    assert late.total() >= 20, pace.seen  # 90 requests at 50 ms: about 50 after 2 s
    assert late["fast"] >= 0.9 * late.total(), late


async def test_an_upstream_slowed_by_100ms_loses_its_traffic_within_5s(tmp_path: Path) -> None:
    a, b = FixtureProxy(ModuleSet(DISTINCT), name="a"), FixtureProxy(ModuleSet(DISTINCT), name="b")
    async with a, b:
        rules = _acceptance_rules(tmp_path / "r.yaml", {"a": a.url, "b": b.url})
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            pace = Pacer(http, gw.url)
            await pace.run(until=3.0)
            before = pace.served(1.0, 3.0)  # comparable upstreams: the pool's order, a first
            assert before["a"] >= 0.8 * before.total(), before
            slowed = pace.now()
            a.add_fault(Fault(delay=0.1))
            await pace.run(until=slowed + 8.0)
    after = pace.served(slowed + 5.0, slowed + 8.0)
    assert after.total() >= 15, pace.seen
    share_before = before["a"] / before.total()
    assert after["a"] <= 0.2 * share_before * after.total(), after


async def test_a_recovered_upstream_wins_its_traffic_back_within_30s(tmp_path: Path) -> None:
    a, b = FixtureProxy(ModuleSet(DISTINCT), name="a"), FixtureProxy(ModuleSet(DISTINCT), name="b")
    async with a, b:
        rules = _acceptance_rules(tmp_path / "r.yaml", {"a": a.url, "b": b.url})
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            pace = Pacer(http, gw.url)
            await pace.run(until=2.0)
            a.add_fault(Fault(delay=0.1))
            await pace.run(until=6.0)
            assert pace.served(4.0, 6.0)["a"] <= 5, pace.served(4.0, 6.0)  # it had lost
            a.clear_faults()
            recovered = pace.now()
            await pace.run(until=recovered + 9.0)
    back = pace.served(recovered + 6.0, recovered + 9.0)
    assert back.total() >= 30, pace.seen
    assert back["a"] >= 0.8 * back.total(), back


async def test_failing_upstream_is_ejected_probed_and_readmitted(tmp_path: Path) -> None:
    a, b = FixtureProxy(ModuleSet(MODULES), name="a"), FixtureProxy(ModuleSet(MODULES), name="b")
    async with a, b:
        rules = _rules(tmp_path / "r.yaml", {"a": a.url, "b": b.url}, mode="ordered")
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:

            async def view() -> dict[str, Any]:
                async with http.get(gw.url + "/debug/upstreams") as resp:
                    return dict((await resp.json())["upstreams"]["a"])

            async def health() -> str:
                return str((await view())["health"])

            async def ejections() -> str:
                return "again" if (await view())["ejections"] >= 2 else "once"

            a.add_fault(Fault(status=500))
            got = await _share(http, gw.url, 10)
            assert got == Counter({"b": 10})  # any-error: clients never see the 500s
            assert await health() == "ejected"
            asked = a.count("/@v/")
            await _share(http, gw.url, 10)
            assert a.count("/@v/") == asked  # ejected: not asked while others serve
            # after the ejection, a half-open probe still fails: ejected again, for longer
            await until_equal(ejections, "again", 3.0, interval=0.05)
            a.clear_faults()
            await until_equal(health, "healthy", 6.0, interval=0.05)  # a probe re-admits it
            got = await _share(http, gw.url, 10)
            assert got["a"] == 10  # ordered pool: back in first place


def _debug(url: str, module: str | None = None) -> dict[str, Any]:
    q = f"?module={module}" if module else ""
    with urllib.request.urlopen(f"{url}/debug/upstreams{q}", timeout=5) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


def _first(url: str, module: str | None = None) -> str:
    return str(_debug(url, module)["pools"]["main"]["candidates"][0]["upstream"])


def test_cost_set_through_the_cli_flips_two_gateways_within_2s(
    tmp_path: Path, redis_server: Any
) -> None:
    x = FixtureProxy(ModuleSet(MODULES), name="x").start_in_thread()
    y = FixtureProxy(ModuleSet(MODULES), name="y").start_in_thread()
    gws: list[GatewayProcess] = []
    try:
        rules = write_rules(
            tmp_path / "r.yaml",
            [
                {"name": "x", "url": x.url, "cost_per_gb": 0.01},
                {"name": "y", "url": y.url, "cost_per_gb": 0.05},
            ],
            {"main": {"upstreams": ["x", "y"]}},
            default={"pool": "main"},
            selection={"mode": "best", "weights": {"rtt": 0.0, "cost": 1.0, "heat": 0.0}},
            cache={"memory": 0},
        )
        gws = [GatewayProcess(rules, args=["--redis", redis_server.url]) for _ in range(2)]
        for gw in gws:
            gw.wait_ready()
        assert [_first(gw.url) for gw in gws] == ["x", "x"]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "router",
                "cost",
                "set",
                "x",
                "1.0",
                "--rules",
                str(rules),
                "--redis",
                redis_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        # the bound is the point: each gateway reads the fleet's costs every second on a
        # 250 ms step, so a flip takes at most about 1.25 s after the write (0.8 s measured
        # under load), and the clock starts after the command exited, past the write
        started = time.monotonic()
        while time.monotonic() - started < 2.0 and [_first(gw.url) for gw in gws] != ["y", "y"]:
            time.sleep(0.05)
        assert [_first(gw.url) for gw in gws] == ["y", "y"]
        for gw in gws:
            with urllib.request.urlopen(gw.url + "/example.com/m1/@v/v1.0.0.info", timeout=5) as r:
                assert r.headers["X-Router-Upstream"] == "y"
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "router",
                "cost",
                "list",
                "--rules",
                str(rules),
                "--redis",
                redis_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "x\t1 (override; rules: 0.01)" in listed.stdout
    finally:
        for gw in gws:
            gw.stop()
        x.stop()
        y.stop()


def test_heat_built_through_one_gateway_ranks_on_another(tmp_path: Path, redis_server: Any) -> None:
    x = FixtureProxy(ModuleSet(MODULES), name="x").start_in_thread()
    y = FixtureProxy(ModuleSet(MODULES), name="y").start_in_thread()
    gws: list[GatewayProcess] = []
    try:
        ups = [{"name": "x", "url": x.url}, {"name": "y", "url": y.url}]
        heat_only = {"mode": "best", "weights": {"rtt": 0.0, "cost": 0.0, "heat": 1.0}}
        # replica A prefers y by its own pool order; replica B would pick x on a tie
        rules_a = write_rules(
            tmp_path / "a.yaml",
            ups,
            {"main": {"upstreams": ["y", "x"], "mode": "ordered"}},
            default={"pool": "main"},
            selection=heat_only,
            cache={"memory": 0},
        )
        rules_b = write_rules(
            tmp_path / "b.yaml",
            ups,
            {"main": {"upstreams": ["x", "y"]}},
            default={"pool": "main"},
            selection=heat_only,
            cache={"memory": 0},
        )
        gws = [GatewayProcess(r, args=["--redis", redis_server.url]) for r in (rules_a, rules_b)]
        for gw in gws:
            gw.wait_ready()
        hot = "example.com/m3"
        assert _first(gws[1].url, hot) == "x"
        for _ in range(30):
            with urllib.request.urlopen(f"{gws[0].url}/{hot}/@v/v1.0.0.info", timeout=5) as r:
                assert r.headers["X-Router-Upstream"] == "y"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _first(gws[1].url, hot) != "y":
            time.sleep(0.1)
        view = _debug(gws[1].url, hot)["pools"]["main"]["candidates"]
        assert view[0]["upstream"] == "y" and view[0]["components"]["heat"] == 1.0
        with urllib.request.urlopen(f"{gws[1].url}/{hot}/@v/v1.0.0.mod", timeout=5) as r:
            assert r.headers["X-Router-Upstream"] == "y"
        assert _first(gws[1].url, "example.com/m4") == "x"  # heat is per module
    finally:
        for gw in gws:
            gw.stop()
        x.stop()
        y.stop()


async def test_redis_killed_and_restarted_mid_run_fails_no_request(
    tmp_path: Path, redis_server: Any
) -> None:
    a, b = FixtureProxy(ModuleSet(MODULES), name="a"), FixtureProxy(ModuleSet(MODULES), name="b")
    async with a, b:
        rules = _rules(tmp_path / "r.yaml", {"a": a.url, "b": b.url})
        async with (
            gateway_in_process(rules, redis_url=redis_server.url) as g1,
            gateway_in_process(rules, redis_url=redis_server.url) as g2,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            failures: list[str] = []
            stop = asyncio.Event()
            count = 0

            async def client(url: str) -> None:
                nonlocal count
                i = 0
                while not stop.is_set():
                    m = MODULES[i % len(MODULES)]
                    i += 1
                    try:
                        async with http.get(f"{url}/{m.path}/@v/v1.0.0.mod") as resp:
                            await resp.read()
                            count += 1
                            if resp.status != 200:
                                failures.append(str(resp.status))
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        failures.append(f"{m.path}: {exc!r}")

            tasks = [asyncio.create_task(client(u)) for u in (g1.url, g2.url) for _ in range(3)]
            await asyncio.sleep(1.0)
            redis_server.kill()
            await asyncio.sleep(1.5)
            redis_server.start()
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            assert failures == []
            assert count > 100
            deadline = time.monotonic() + 10
            text = ""
            while time.monotonic() < deadline:
                async with http.get(g1.url + "/metrics") as resp:
                    text = await resp.text()
                if "goproxy_router_redis_up 1.0" in text:
                    break
                await asyncio.sleep(0.2)
            assert "goproxy_router_redis_errors_total" in text
            assert "goproxy_router_redis_up 1.0" in text  # reconnected
