"""Soak: the gateway (memory tier on, pass-through of every path kind) at half its
saturating load for --soak-seconds; RSS, open FDs and p99 per interval. With
matplotlib installed (the bench extra) it also plots them."""

from __future__ import annotations

import sys
import time

from benchmarks.harness.bench import Bench
from benchmarks.harness.load import open_fds, process_tree, rss_mib
from benchmarks.harness.report import Ratio, Section, fmt

from .latency import half_load, paced_connections

TITLE = "Soak at half load: RSS, open FDs, p99"


def run(b: Bench) -> Section:
    fx = b.fixture()
    s = Section("soak", TITLE, ["elapsed s", "req/s", "p99 ms", "errors", "RSS MiB", "open FDs"])
    gw = b.gateway("gw-soak", "cache: {memory: 64MiB}\n")
    samples: list[dict[str, float]] = []
    with b.serving(gw):
        rate = half_load(b, gw)
        conns = paced_connections(rate)
        chunk = max(2.0, min(30.0, b.s.soak_seconds / 20))
        started = time.monotonic()
        while time.monotonic() - started < b.s.soak_seconds:
            r = b.wrk.measure(
                "soak",
                gw.port,
                fx.files["metadata"],
                seconds=chunk,
                warmup=0,
                connections=conns,
                sut=process_tree(gw.pid),
                rate=rate,
            )
            pids = process_tree(gw.pid)
            samples.append(
                {
                    "elapsed_s": round(time.monotonic() - started, 1),
                    "rps": r.rps,
                    "p99_ms": r.p99_ms,
                    "errors": r.error_count,
                    "rss_mib": rss_mib(pids),
                    "fds": open_fds(pids),
                }
            )
    for x in samples:
        s.rows.append(
            [
                f"{x['elapsed_s']:.0f}",
                fmt(x["rps"], 0),
                fmt(x["p99_ms"]),
                f"{x['errors']:.0f}",
                fmt(x["rss_mib"], 1),
                f"{x['fds']:.0f}",
            ]
        )
    first, last = samples[0], samples[-1]
    s.notes.append(
        f"offered {rate:,.0f} req/s on {conns} connections, {len(samples)} intervals of {chunk:g} s"
    )
    s.ratios += [
        Ratio.of("RSS end / start", last["rss_mib"], first["rss_mib"]),
        Ratio.of("open FDs end / start", last["fds"], first["fds"]),
        Ratio.of("p99 end / start", last["p99_ms"], first["p99_ms"]),
    ]
    if png := plot(samples, b.s.quick):
        s.notes.append(f"plot: {png}")
    s.data = {"rate": rate, "samples": samples}
    return s


def plot(samples: list[dict[str, float]], quick: bool) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is missing (pip install -e '.[bench]'): no soak plot", file=sys.stderr)
        return None
    from benchmarks.harness.procs import REPO

    out = REPO / "benchmarks" / "out" / ("soak-quick.png" if quick else "soak.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    t = [x["elapsed_s"] for x in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
    for ax, key, label in zip(
        axes, ("rss_mib", "fds", "p99_ms"), ("RSS MiB", "open FDs", "p99 ms"), strict=True
    ):
        ax.plot(t, [x[key] for x in samples])
        ax.set_ylabel(label)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return str(out.relative_to(REPO))
