"""What upstream selection costs: per request in-process (SelectionState.order +
observe + served, warmed with an hour of simulated Zipf traffic), and end to end in
the gateway over a pool of two upstreams, `ordered` vs `weighted` (the default)."""

from __future__ import annotations

import random
import statistics
import time

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import free_port
from benchmarks.harness.report import Ratio, Section, fmt
from benchmarks.harness.servers import static_body
from router.core.model import Pool, Rules, Selection, Upstream
from router.state.local import SelectionState

TITLE = "Upstream selection cost"
MODES = ("ordered", "best", "weighted")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def micro(n: int, mode: str, requests: int) -> float:
    """Median µs per request for `n` candidates in `mode`."""
    ups = tuple(Upstream(name=f"up{i:02d}", url=f"http://up{i:02d}.invalid") for i in range(n))
    pool = Pool(name="main", upstreams=tuple(u.name for u in ups), fallback="any-error")
    rules = Rules(upstreams=ups, pools=(pool,), selection=Selection(mode=mode))  # type: ignore[arg-type]
    clock = Clock()
    state = SelectionState(rules, clock=clock, rng=random.Random(n))
    rng = random.Random(7)
    base = {u.name: rng.uniform(0.01, 0.3) for u in ups}
    mods = [f"example.com/m{int(rng.paretovariate(1.0)) % 20_000}" for _ in range(requests * 2)]
    samples: list[int] = []
    for i, module in enumerate(mods):
        clock.now += 0.1
        t0 = time.perf_counter_ns()
        name = state.order(list(ups), module)[0].candidate.name
        state.observe(name, failed=False, rtt=base[name] * rng.lognormvariate(0, 0.4))
        state.served(name, module, 4096)
        if i >= requests:  # the first half warms the state
            samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def run(b: Bench) -> Section:
    s = Section("selection", TITLE, ["target", *RUN_COLUMNS[1:]])
    requests = 500 if b.s.quick else 40_000
    for n in (2, 8, 32):
        s.notes.append(
            f"in-process, {n} candidates: "
            + ", ".join(f"{m} {fmt(micro(n, m, requests))} µs" for m in MODES)
            + " per request (median)"
        )
    fx = b.fixture()
    p2 = free_port()
    second = b.nginx(
        "upstream-b", static_body(p2, fx.root), p2, cpus=b.s.load_cpus, probe=fx.paths["info"][0]
    )
    got: dict[str, Run] = {}
    try:
        for mode in ("ordered", "weighted"):
            ups = {"a": b.upstream().port, "b": p2}
            gw = b.gateway(
                f"gw-sel-{mode}",
                f"cache: {{memory: 0}}\nselection: {{mode: {mode}, probe_interval: 1h}}\n",
                upstreams=ups,
            )
            with b.serving(gw):
                got[mode] = r = b.measure(gw, f"goproxy-router, selection {mode}", fx.files["info"])
                s.rows.append(run_row(r))
    finally:
        b.stop(second)
    s.ratios.append(
        Ratio.of(
            "weighted / ordered (req/s)", rps(got["weighted"]), rps(got["ordered"]), at_least=0.9
        )
    )
    s.data = {"runs": [run_data(r) for r in got.values()]}
    return s
