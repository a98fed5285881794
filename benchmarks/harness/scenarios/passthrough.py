"""Pass-through: every request goes to the upstream (no cache), against nginx
proxy_pass and the bare aiohttp forwarder, with the upstream itself as the ceiling."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import free_port
from benchmarks.harness.report import Ratio, Section
from benchmarks.harness.servers import Server, proxy_body

TITLE = "Pass-through (no cache): .info and 1 MiB zips"
WORKLOADS = ("info", "zip-1m")


def run(b: Bench) -> Section:
    up = b.upstream()
    fx = b.fixture()
    s = Section("passthrough", TITLE, ["workload", *RUN_COLUMNS])
    got: dict[tuple[str, str], Run] = {}
    port = free_port()
    servers: list[tuple[str, Callable[[], Server]]] = [
        ("upstream nginx, direct", lambda: up),
        ("goproxy-router", lambda: b.gateway("gw-pass", "cache: {memory: 0}\n")),
        (
            "nginx proxy_pass",
            lambda: b.nginx(
                "nginx-proxy",
                proxy_body(b.work, "proxy", port, up.port, cache=False),
                port,
                probe=fx.paths["info"][0],
            ),
        ),
        ("bare aiohttp forwarder", lambda: b.baseline("forward", up.url)),
    ]
    for label, start in servers:
        server = start()
        try:
            for w in WORKLOADS:
                b.check(server, w, sample=4)
                got[(w, label)] = r = b.measure(server, label, fx.files[w])
                s.rows.append([w, *run_row(r)])
        finally:
            if server is not up:
                b.stop(server)
    for w in WORKLOADS:
        gw = got[(w, "goproxy-router")]
        px = got[(w, "nginx proxy_pass")]
        bare = got[(w, "bare aiohttp forwarder")]
        s.ratios.append(Ratio.of(f"{w}: gateway / nginx proxy_pass (req/s)", rps(gw), rps(px)))
        s.ratios.append(
            Ratio.of(
                f"{w}: gateway / bare aiohttp forwarder (req/s)", rps(gw), rps(bare), at_least=0.8
            )
        )
        if gw.sut_cpu_us_per_req and px.sut_cpu_us_per_req:
            s.ratios.append(
                Ratio.of(
                    f"{w}: gateway / nginx proxy_pass (CPU per request)",
                    gw.sut_cpu_us_per_req,
                    px.sut_cpu_us_per_req,
                )
            )
    s.data = {"runs": [run_data(r) for r in got.values()]}
    return s
