"""1 MiB zips from the artifact store against nginx serving the same files as static
files, over plain HTTP and over TLS."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.harness.bench import RUN_COLUMNS, Bench, rps, run_data, run_row
from benchmarks.harness.load import Run
from benchmarks.harness.procs import free_port
from benchmarks.harness.report import Ratio, Section
from benchmarks.harness.servers import Server, self_signed, static_body

TITLE = "1 MiB zips: artifact store vs nginx static files (plain and TLS)"


def run(b: Bench) -> Section:
    up, fx = b.upstream(), b.fixture()
    tls = self_signed(b.work)
    s = Section("zips", TITLE, RUN_COLUMNS)
    store = f"cache: {{memory: 0, dir: '{b.work / 'store'}'}}\n"
    p1, p2 = free_port(), free_port()
    probe = fx.paths["zip-1m"][0]
    starts: list[tuple[str, Callable[[], Server]]] = [
        ("nginx static", lambda: b.nginx("static", static_body(p1, fx.root), p1, probe=probe)),
        ("goproxy-router (artifact store)", lambda: b.gateway("gw-store", store)),
        (
            "nginx static, TLS",
            lambda: b.nginx("static-tls", static_body(p2, fx.root, tls), p2, probe=probe, tls=True),
        ),
        ("goproxy-router (artifact store), TLS", lambda: b.gateway("gw-store-tls", store, tls=tls)),
    ]
    got: dict[str, Run] = {}
    for label, start in starts:
        server = start()
        with b.serving(server):
            b.warm(server, "zip-1m")  # the store holds every zip before measuring
            b.check(server, "zip-1m", sample=2)
            got[label] = r = b.measure(
                server, label, fx.files["zip-1m"], connections=min(16, b.s.connections)
            )
            s.rows.append(run_row(r))
    for suffix in ("", ", TLS"):
        s.ratios.append(
            Ratio.of(
                f"store / nginx static{suffix} (MiB/s)",
                rps(got[f"goproxy-router (artifact store){suffix}"]),
                rps(got[f"nginx static{suffix}"]),
                at_least=0.9,
            )
        )
    s.data = {"runs": [run_data(r) for r in got.values()]}
    del up
    return s
