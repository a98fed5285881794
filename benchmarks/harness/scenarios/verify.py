"""What `verify_checksums: true` costs: one gateway, two tenants on one pool (`devops`
verifying, `plain` not, by X-Tenant-ID), artifact store on. Upstream: tests/support's
FixtureProxy; checksum DB: tests/support's TestSumDB (a real signed tlog). First
fetches of module versions nobody asked for (one at a time, tenants alternating), then
cached hits with wrk per tenant."""

from __future__ import annotations

import json
import statistics
import time

from support.gomod import FixtureModule, large_module, simple_module
from support.goproxy_server import FixtureProxy
from support.sumdb_server import TestSumDB

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import BenchError, http_get
from benchmarks.harness.report import Ratio, Section, fmt

TITLE = "Checksum verification cost (verified vs plain tenant)"
TENANTS = {"plain": "plain", "verified": "devops"}
MIB = 1 << 20


def run(b: Bench) -> Section:
    sizes = [("1 MiB", MIB, 2)] if b.s.quick else [("1 MiB", MIB, 16), ("100 MiB", 100 * MIB, 3)]
    mods: dict[tuple[str, str], list[FixtureModule]] = {
        (label, t): [
            large_module(
                f"example.com/verifybench/{label.replace(' ', '')}-{t}",
                f"v1.0.{i}",
                n,
                seed=i + 100 * k,
            )
            for i in range(count)
        ]
        for label, n, count in sizes
        for k, t in enumerate(TENANTS)
    }
    warm = simple_module("example.com/verifybench/warmup", "v1.0.0")
    every = [warm, *(m for ms in mods.values() for m in ms)]
    db = TestSumDB("sum.test.example")
    for m in every:
        db.add_module(m)
    db.start_in_thread()
    proxy = FixtureProxy(every, name="verify-bench", zip_dir=b.work / "verify-upstream")
    proxy.start_in_thread(timeout=600)
    s = Section("verify", TITLE, ["zip / tenant", *RUN_COLUMNS[1:]])
    try:
        extra = "".join(
            f"{k}: {json.dumps(v)}\n"
            for k, v in (
                ("cache", {"memory": "256MiB", "dir": str(b.work / "verify-store")}),
                ("checksum_dbs", [{"name": db.name, "key": db.verifier_key, "url": db.url}]),
                (
                    "tenants",
                    [
                        {"id": "devops", "pool": "main", "verify_checksums": True},
                        {"id": "plain", "pool": "main"},
                    ],
                ),
            )
        )
        gw = b.gateway("gw-verify", extra, upstreams={"origin": proxy.port})
        with b.serving(gw):
            for tid in TENANTS.values():  # unmeasured: the DB's tree head and tile
                fetch(gw.port, warm.url_path("zip"), tid)
            first: dict[tuple[str, str], list[float]] = {k: [] for k in mods}
            for label, _, count in sizes:
                for i in range(count):
                    for t in TENANTS if i % 2 == 0 else reversed(list(TENANTS)):
                        first[(label, t)].append(
                            fetch(gw.port, mods[(label, t)][i].url_path("zip"), TENANTS[t])
                        )
            got: dict[tuple[str, str], Run] = {}
            for label, _, _ in sizes:
                for t, tid in TENANTS.items():
                    paths = b.work / f"verify-{label.replace(' ', '')}-{t}.txt"
                    paths.write_text("".join(m.url_path("zip") + "\n" for m in mods[(label, t)]))
                    conns = 2 if label == "100 MiB" else min(16, b.s.connections)
                    got[(label, t)] = r = b.measure(
                        gw, f"{label} / {t}", paths, connections=conns, header=f"X-Tenant-ID: {tid}"
                    )
                    s.rows.append(run_row(r))
    finally:
        proxy.stop()
        db.stop()
    for label, _, _ in sizes:
        p50 = {t: statistics.median(first[(label, t)]) for t in TENANTS}
        s.notes.append(
            f"{label} first fetch p50: plain {fmt(p50['plain'] * 1e3, 1)} ms, "
            f"verified {fmt(p50['verified'] * 1e3, 1)} ms"
        )
        s.ratios.append(
            Ratio.of(f"{label} first fetch p50: verified / plain", p50["verified"], p50["plain"])
        )
        s.ratios.append(
            Ratio.of(
                f"{label} cached hits: verified / plain (req/s)",
                rps(got[(label, "verified")]),
                rps(got[(label, "plain")]),
                at_least=0.9,
            )
        )
    s.data = {
        "first_fetch_s": {f"{k[0]} {k[1]}": v for k, v in first.items()},
        "runs": [run_data(r) for r in got.values()],
    }
    return s


def fetch(port: int, path: str, tenant: str) -> float:
    started = time.perf_counter()
    status, _, body = http_get(port, path, headers={"X-Tenant-ID": tenant}, timeout=300)
    if status != 200:
        raise BenchError(f"GET {path} as {tenant}: {status}: {body[:200]!r}")
    return time.perf_counter() - started
