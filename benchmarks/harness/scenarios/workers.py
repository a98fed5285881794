"""`serve --workers 2` against one worker, on cached .info hits (the memory tier), so
the upstream is not the limit. Neither is pinned: two workers need two CPUs; wrk
still runs on the load CPUs, so on a 2-core machine it competes with them."""

from __future__ import annotations

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.report import Ratio, Section

TITLE = "serve --workers 2 vs 1 (cached .info hits)"


def run(b: Bench) -> Section:
    fx = b.fixture()
    s = Section("workers", TITLE, RUN_COLUMNS)
    got: dict[int, Run] = {}
    for n in (1, 2):
        server = b.gateway(f"gw-workers{n}", "cache: {memory: 256MiB}\n", workers=n, cpus=None)
        with b.serving(server):
            b.warm(server, "info")
            b.warm(server, "info")  # with two workers each has its own memory tier
            got[n] = r = b.measure(server, f"goproxy-router --workers {n}", fx.files["info"])
            s.rows.append(run_row(r))
    s.ratios.append(
        Ratio.of("2 workers / 1 worker (req/s)", rps(got[2]), rps(got[1]), at_least=1.7)
    )
    s.data = {"runs": [run_data(r) for r in got.values()]}
    return s
