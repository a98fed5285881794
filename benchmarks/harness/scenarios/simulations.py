"""The cache-policy and selection simulations (sims/): no sockets, simulated time.
Quick runs replay one small synthetic workload each; full runs the cache table on
the published traces and the whole selection scenario. Their own CLIs (`python -m
benchmarks.harness.sims.cache_sim --table|--sweep`, `... .selection_sim`) print the
detailed tables CACHE.md and SELECTION.md cite."""

from __future__ import annotations

from dataclasses import asdict

from benchmarks.harness.bench import Bench
from benchmarks.harness.report import Ratio, Section
from benchmarks.harness.sims import cache_sim, selection_sim

TITLE = "Cache policy and selection simulations"
SEED = 20240611


def run(b: Bench) -> Section:
    s = Section("simulations", TITLE, ["simulation", "router", "baseline", "router / baseline"])
    w = cache_sim.zipf_workload(
        0.9, 20_000 if b.s.quick else 100_000, 50_000 if b.s.quick else 1_000_000, 1, 0.05, 0.2
    )
    ratios = cache_sim.run_all(w, step=cache_sim.STEP)
    s.rows.append(
        [
            f"cache hit ratio, {w.name}",
            f"{ratios['router']:.3f}",
            f"LRU {ratios['lru']:.3f}",
            f"{ratios['router'] / ratios['lru']:.2f}",
        ]
    )
    s.ratios.append(
        Ratio.of(
            "cache hit ratio: router / LRU (zipf 0.9 + 20 % scans)",
            ratios["router"],
            ratios["lru"],
            at_least=1.0,
        )
    )
    sw = (
        selection_sim.Workload(rate=0.3, hours=1.5, scan_modules=50)
        if b.s.quick
        else selection_sim.Workload()
    )
    trace = selection_sim.make_trace(sw, SEED)
    specs = {spec.key: spec for spec in selection_sim.policies()}
    pool_order = "fixed:" + ",".join(selection_sim.NAMES)
    res = {
        k: selection_sim.simulate(specs[k], trace, sw, SEED)[0] for k in ("weighted", pool_order)
    }
    ours, fixed = res["weighted"], res[pool_order]
    s.rows.append(
        [
            f"selection, mean pull latency ms ({len(trace.times):,} pulls)",
            f"{ours.mean_ms:,.0f}",
            f"pool order {fixed.mean_ms:,.0f}",
            f"{ours.mean_ms / fixed.mean_ms:.2f}",
        ]
    )
    s.ratios.append(
        Ratio.of(
            "selection sim: weighted / fixed pool order (mean pull latency)",
            ours.mean_ms,
            fixed.mean_ms,
            at_most=1.0,
        )
    )
    s.notes.append(
        "all policies and the phase tables: `python -m benchmarks.harness.sims.selection_sim`;"
        " the cache table: `python -m benchmarks.harness.sims.cache_sim --table`"
    )
    s.data = {"cache_hit_ratios": ratios, "selection": {k: asdict(v) for k, v in res.items()}}
    return s
