"""Cached .info hits from the memory tier, against nginx proxy_cache and the bare
dict-cache server; and the limiter's cost (limits that never trigger)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import free_port
from benchmarks.harness.report import Ratio, Section
from benchmarks.harness.servers import Server, proxy_body

TITLE = "Cached .info hits (memory tier)"
MEMORY = "cache: {memory: 256MiB}\n"
LIMITS = "limits: {anonymous: {rate: 1000000/s, burst: 1000000}}\n"


def run(b: Bench) -> Section:
    up, fx = b.upstream(), b.fixture()
    s = Section("cached", TITLE, RUN_COLUMNS)
    port = free_port()
    starts: list[tuple[str, Callable[[], Server]]] = [
        (
            "nginx proxy_cache",
            lambda: b.nginx(
                "nginx-cache",
                proxy_body(b.work, "pcache", port, up.port, cache=True),
                port,
                probe=fx.paths["info"][0],
            ),
        ),
        ("bare aiohttp dict cache", lambda: b.baseline("dict", str(fx.root))),
        ("goproxy-router (memory tier)", lambda: b.gateway("gw-mem", MEMORY)),
        (
            "goproxy-router (memory tier, limits on)",
            lambda: b.gateway("gw-mem-limits", MEMORY + LIMITS),
        ),
    ]
    got: dict[str, Run] = {}
    for label, start in starts:
        server = start()
        with b.serving(server):
            b.warm(server, "info")
            b.check(server, "info", sample=4)
            got[label] = r = b.measure(server, label, fx.files["info"])
            s.rows.append(run_row(r))
    gw = got["goproxy-router (memory tier)"]
    s.ratios += [
        Ratio.of(
            "gateway / nginx proxy_cache (req/s)",
            rps(gw),
            rps(got["nginx proxy_cache"]),
        ),
        Ratio.of(
            "gateway / bare dict cache (req/s)",
            rps(gw),
            rps(got["bare aiohttp dict cache"]),
            at_least=0.8,
        ),
        Ratio.of(
            "limits on / off (req/s)",
            rps(got["goproxy-router (memory tier, limits on)"]),
            rps(gw),
            at_least=0.95,
        ),
    ]
    s.data = {"runs": [run_data(r) for r in got.values()]}
    return s
