"""Added latency below saturation: find the gateway's saturating rate on pass-through
.info (closed loop), then offer half of it (paced wrk connections) to the gateway,
nginx proxy_pass, the bare forwarder and the upstream itself; the p99 each adds to
the upstream's own."""

from __future__ import annotations

import math

from benchmarks.harness.bench import RUN_COLUMNS, Bench, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import free_port
from benchmarks.harness.report import Ratio, Section, fmt
from benchmarks.harness.servers import Server, proxy_body

TITLE = "p99 added latency at half the gateway's saturating load (.info pass-through)"
PACE_MS = 20.0  # mean wait of a paced connection between its requests


def half_load(b: Bench, gw: Server) -> float:
    sat = b.measure(gw, "goproxy-router, saturating", b.fixture().files["info"])
    return max(10.0, sat.rps / 2)


def paced_connections(rate: float) -> int:
    """Connections that offer `rate` req/s each waiting about PACE_MS between requests.
    wrk's delay is whole milliseconds and comes after the answer: a pace near 1 ms
    (8 connections at 8k req/s) offered a third more than asked, and the answer's own
    time is a large share of it. At 20 ms both are a few percent."""
    return max(8, math.ceil(rate * PACE_MS / 1000))


def run(b: Bench) -> Section:
    up, fx = b.upstream(), b.fixture()
    s = Section("latency", TITLE, RUN_COLUMNS)
    gw = b.gateway("gw-latency", "cache: {memory: 0}\n")
    got: dict[str, Run] = {}
    try:
        rate = half_load(b, gw)
        conns = paced_connections(rate)
        s.notes.append(f"offered load: {rate:,.0f} req/s over {conns} paced connections")
        port = free_port()
        proxy = b.nginx(
            "nginx-proxy-lat",
            proxy_body(b.work, "plat", port, up.port, cache=False),
            port,
            probe=fx.paths["info"][0],
        )
        bare = b.baseline("forward", up.url)
        for label, server in (
            ("upstream nginx, direct", up),
            ("goproxy-router", gw),
            ("nginx proxy_pass", proxy),
            ("bare aiohttp forwarder", bare),
        ):
            got[label] = r = b.measure(
                server, label, fx.files["info"], connections=conns, rate=rate
            )
            s.rows.append(run_row(r))
        b.stop(proxy)
        b.stop(bare)
    finally:
        b.stop(gw)
    base = got["upstream nginx, direct"].p99_ms
    added = {k: r.p99_ms - base for k, r in got.items() if k != "upstream nginx, direct"}
    for k, v in added.items():
        s.notes.append(f"p99 added by {k}: {fmt(v)} ms")
    s.ratios.append(
        Ratio.of(
            "gateway / nginx proxy_pass (p99 added, ms)",
            added["goproxy-router"],
            added["nginx proxy_pass"] or None,
        )
    )
    s.ratios.append(
        Ratio.of(
            "gateway / bare forwarder (p99 added, ms)",
            added["goproxy-router"],
            added["bare aiohttp forwarder"] or None,
        )
    )
    s.data = {"rate": rate, "p99_added_ms": added, "runs": [run_data(r) for r in got.values()]}
    return s
