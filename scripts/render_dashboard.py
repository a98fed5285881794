#!/usr/bin/env python3
r"""Render the main panels of the goproxy-router dashboard to PNG, from /metrics snapshots.

Grafana needs Prometheus; this needs neither. It reads a series of `/metrics` text snapshots
(Prometheus exposition format), computes what the dashboard's PromQL computes (per-second rates
between snapshots over a sliding window, hit ratio, histogram quantiles) and draws the panels
with matplotlib:

    # scrape a running gateway every second for a minute while something else loads it
    .venv/bin/python scripts/render_dashboard.py --scrape http://127.0.0.1:8080/metrics \
        --interval 1 --duration 60 --save /tmp/snapshots --out docs/img/

    # render snapshots saved earlier (files NAME-<unix time>.prom, as --save writes them)
    .venv/bin/python scripts/render_dashboard.py --snapshots /tmp/snapshots --out docs/img/

    # the pictures of docs/operations.md: two loopback fixture upstreams, the gateway, a mixed
    # load for --duration seconds (misses, not-founds, a 500 fault and a slow spell on one
    # upstream), scraped every --interval seconds. Loopback only; needs the repository's tests/.
    .venv/bin/python scripts/render_dashboard.py --demo --duration 60 --out docs/img/

Writes traffic_by_tenant.png, status_classes.png, cache_hit_rate.png, upstream_share.png,
upstream_latency.png, upstream_errors.png, cache_size.png and dashboard.png (all of them).
Needs matplotlib (`.venv/bin/pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
P = "goproxy_router_"
HIT_RESULTS = ("hit", "stale", "stale_if_error", "coalesced")
HIT_WARNING, HIT_CRITICAL, TTFB_CRITICAL = 0.85, 0.75, 1.2
NOT_FAILURES = ("not_found", "4xx")  # upstream_errors_total causes that are not health failures

# ----------------------------------------------------------------------------- snapshots

Key = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels
Series = dict[tuple[str, ...], list[float]]  # label values of the `by` labels -> value per snapshot


@dataclass(frozen=True, slots=True)
class Snapshot:
    t: float
    samples: dict[Key, float]


def parse_exposition(text: str) -> dict[Key, float]:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


_STAMP = re.compile(r"-(\d+(?:\.\d+)?)\.prom$")


def save_snapshot(folder: Path, t: float, text: str) -> Path:
    path = folder / f"metrics-{t:.3f}.prom"
    path.write_text(text)
    return path


def load_snapshots(folder: Path) -> list[Snapshot]:
    snaps = []
    for path in folder.glob("*.prom"):
        m = _STAMP.search(path.name)
        t = float(m.group(1)) if m else path.stat().st_mtime
        snaps.append(Snapshot(t, parse_exposition(path.read_text())))
    snaps.sort(key=lambda s: s.t)
    return snaps


def scrape(
    url: str,
    interval: float,
    duration: float,
    save: Path | None,
    stop: threading.Event | None = None,
) -> list[Snapshot]:
    """Fetch `url` every `interval` seconds for `duration` seconds (or until `stop`)."""
    snaps: list[Snapshot] = []
    start = time.monotonic()
    failures = 0
    while time.monotonic() - start < duration and not (stop and stop.is_set()):
        tick = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=max(interval, 1.0)) as r:
                text = r.read().decode()
        except (OSError, urllib.error.URLError) as exc:
            failures += 1
            print(f"scrape failed ({exc}); {failures} so far", file=sys.stderr)
        else:
            now = time.time()
            snaps.append(Snapshot(now, parse_exposition(text)))
            if save is not None:
                save_snapshot(save, now, text)
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    return snaps


# ----------------------------------------------------------------------------- PromQL-ish math


def _select(
    snaps: Sequence[Snapshot], name: str, match: Callable[[dict[str, str]], bool] | None
) -> set[Key]:
    keys: set[Key] = set()
    for snap in snaps:
        for key in snap.samples:
            if key[0] == name and (match is None or match(dict(key[1]))):
                keys.add(key)
    return keys


def _group_of(key: Key, by: Sequence[str]) -> tuple[str, ...]:
    labels = dict(key[1])
    return tuple(labels.get(b, "") for b in by)


def gauge_sum(
    snaps: Sequence[Snapshot],
    name: str,
    by: Sequence[str],
    match: Callable[[dict[str, str]], bool] | None = None,
    agg: Callable[[Iterable[float]], float] = sum,
) -> dict[tuple[str, ...], list[float]]:
    """`agg by (by) (name{match})` at every snapshot (NaN where no sample)."""
    keys = _select(snaps, name, match)
    out: dict[tuple[str, ...], list[float]] = {}
    for group in {_group_of(k, by) for k in keys}:
        members = [k for k in keys if _group_of(k, by) == group]
        row = []
        for snap in snaps:
            values = [snap.samples[k] for k in members if k in snap.samples]
            row.append(agg(values) if values else math.nan)
        out[group] = row
    return out


def _monotonic(values: list[float]) -> list[float]:
    """A counter's values with resets undone (a series absent so far counts as 0)."""
    out, offset, last = [], 0.0, 0.0
    for v in values:
        if math.isnan(v):
            out.append(last + offset)
            continue
        if v < last:
            offset += last
        last = v
        out.append(v + offset)
    return out


def counter_increase(
    snaps: Sequence[Snapshot],
    name: str,
    by: Sequence[str],
    match: Callable[[dict[str, str]], bool] | None = None,
) -> dict[tuple[str, ...], list[float]]:
    """Reset-adjusted cumulative `sum by (by)` of a counter at every snapshot."""
    keys = _select(snaps, name, match)
    out: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0] * len(snaps))
    for key in keys:
        row = _monotonic([s.samples.get(key, math.nan) for s in snaps])
        acc = out[_group_of(key, by)]
        for i, v in enumerate(row):
            acc[i] += v
    return dict(out)


def windowed(times: Sequence[float], values: Sequence[float], window: float) -> list[float]:
    """Increase of a cumulative series over the last `window` seconds, at every point."""
    out, j = [], 0
    for i, t in enumerate(times):
        while j < i and times[j] < t - window - 1e-6:
            j += 1
        out.append(values[i] - values[j] if j < i else math.nan)
    return out


def rate(
    snaps: Sequence[Snapshot],
    name: str,
    by: Sequence[str],
    window: float,
    match: Callable[[dict[str, str]], bool] | None = None,
) -> dict[tuple[str, ...], list[float]]:
    """`sum by (by) (rate(name{match}[window]))` at every snapshot."""
    times = [s.t for s in snaps]
    spans = windowed(times, times, window)
    out = {}
    for group, cum in counter_increase(snaps, name, by, match).items():
        inc = windowed(times, cum, window)
        out[group] = [
            d / s if s and not math.isnan(s) else math.nan for d, s in zip(inc, spans, strict=True)
        ]
    return out


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def histogram_quantile(
    q: float, snaps: Sequence[Snapshot], name: str, by: Sequence[str], window: float
) -> dict[tuple[str, ...], list[float]]:
    """`histogram_quantile(q, sum by (by, le) (rate(name_bucket[window])))`."""
    cum = counter_increase(snaps, name + "_bucket", (*by, "le"))
    times = [s.t for s in snaps]
    per_group: dict[tuple[str, ...], dict[float, list[float]]] = defaultdict(dict)
    for key, values in cum.items():
        per_group[key[:-1]][float(key[-1])] = windowed(times, values, window)
    out: Series = {}
    for group, by_le in per_group.items():
        row = []
        for i in range(len(snaps)):
            pairs = [(le, inc[i]) for le, inc in by_le.items() if not math.isnan(inc[i])]
            row.append(quantile(q, pairs) if pairs else math.nan)
        out[group] = row
    return out


def hit_ratio(snaps: Sequence[Snapshot], window: float, by: Sequence[str] = ()) -> Series:
    hits = rate(snaps, P + "cache_requests_total", by, window, lambda m: m["result"] in HIT_RESULTS)
    misses = rate(snaps, P + "cache_requests_total", by, window, lambda m: m["result"] == "miss")
    out: Series = {}
    for group in set(hits) | set(misses):
        h = hits.get(group, [0.0] * len(snaps))
        m = misses.get(group, [0.0] * len(snaps))
        out[group] = [a / (a + b) if (a + b) > 0 else math.nan for a, b in zip(h, m, strict=True)]
    return out


# ----------------------------------------------------------------------------- drawing


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit(
            "render_dashboard: matplotlib is not installed. Install it into the venv:\n"
            "    .venv/bin/pip install matplotlib"
        )
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(group: tuple[str, ...]) -> str:
    return " ".join(g for g in group if g) or "all"


def _xs(snaps: Sequence[Snapshot]) -> list[float]:
    return [s.t - snaps[0].t for s in snaps]


def _style(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("seconds")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0)


STATUS_COLORS = {"2xx": "tab:green", "3xx": "tab:blue", "4xx": "gold", "5xx": "tab:red"}


def _stack(
    ax: Any,
    xs: list[float],
    series: Series,
    percent: bool = False,
    colors: dict[str, str] | None = None,
) -> None:
    groups = sorted(series, key=_label)
    rows = [[0.0 if math.isnan(v) else v for v in series[g]] for g in groups]
    if percent:
        totals = [sum(col) for col in zip(*rows, strict=True)] if rows else []
        rows = [[v / t if t else 0.0 for v, t in zip(r, totals, strict=True)] for r in rows]
    if rows:
        palette = [(colors or {}).get(_label(g), f"C{i}") for i, g in enumerate(groups)]
        ax.stackplot(xs, rows, labels=[_label(g) for g in groups], colors=palette, alpha=0.85)
        ax.legend(loc="upper left", fontsize=8, ncol=2)


def panel_traffic(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    _stack(ax, _xs(snaps), rate(snaps, P + "requests_total", ("tenant",), window))
    _style(ax, "Traffic by tenant", "requests/s")


def panel_status(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    series = rate(snaps, P + "requests_total", ("status",), window)
    _stack(ax, _xs(snaps), series, colors=STATUS_COLORS)
    _style(ax, "Status classes", "requests/s")


def panel_hit_rate(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    xs = _xs(snaps)
    ax.axhspan(0, HIT_CRITICAL, color="red", alpha=0.08)
    ax.axhspan(HIT_CRITICAL, HIT_WARNING, color="orange", alpha=0.10)
    ax.axhline(HIT_WARNING, color="orange", lw=1, ls="--", label="warning 0.85")
    ax.axhline(HIT_CRITICAL, color="red", lw=1, ls="--", label="critical 0.75")
    for group, row in sorted(hit_ratio(snaps, window, ("kind",)).items()):
        ax.plot(xs, row, lw=0.8, alpha=0.6, label=_label(group))
    overall = hit_ratio(snaps, window).get((), [])
    if overall:
        ax.plot(xs, overall, lw=2.2, color="black", label="all kinds")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8, ncol=3)
    _style(ax, "Cache hit rate (hits / (hits + misses))", "ratio")


def panel_share(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    sel = rate(
        snaps,
        P + "upstream_selections_total",
        ("upstream",),
        window,
        lambda m: m.get("upstream") != "cache",
    )
    _stack(ax, _xs(snaps), sel, percent=True)
    ax.set_ylim(0, 1)
    _style(ax, "Upstream share (answers served, cache excluded)", "share")


def panel_latency(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    xs = _xs(snaps)
    name = P + "upstream_request_duration_seconds"
    p99 = histogram_quantile(0.99, snaps, name, ("upstream",), window)
    p50 = histogram_quantile(0.50, snaps, name, ("upstream",), window)
    for i, group in enumerate(sorted(p99)):
        color = f"C{i}"
        ax.plot(xs, p99[group], color=color, lw=2, label=f"{_label(group)} p99")
        ax.plot(xs, p50.get(group, []), color=color, lw=1, ls=":", label=f"{_label(group)} p50")
    ax.axhline(TTFB_CRITICAL, color="red", lw=1, ls="--", label="critical 1.2 s")
    ax.set_yscale("log")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    _style(ax, "Upstream time to first byte", "seconds (log)")


def panel_errors(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    xs = _xs(snaps)
    name = P + "upstream_errors_total"
    failures = rate(
        snaps, name, ("upstream", "cause"), window, lambda m: m["cause"] not in NOT_FAILURES
    )
    _stack(ax, xs, failures)
    benign = rate(snaps, name, ("upstream",), window, lambda m: m["cause"] in NOT_FAILURES)
    for i, (group, row) in enumerate(sorted(benign.items())):
        style = ("--", ":", "-.")[i % 3]
        label = f"{_label(group)} not found / 4xx"
        ax.plot(xs, row, lw=1.2, ls=style, color="dimgray", label=label)
    ejected = gauge_sum(snaps, P + "upstream_ejected", ("upstream",), agg=max)
    top = ax.get_ylim()[1] or 1.0
    for group, row in sorted(ejected.items()):
        on = [v == 1 for v in row]
        if any(on):
            ax.fill_between(
                xs,
                0,
                top,
                where=on,
                step="post",
                color="red",
                alpha=0.12,
                lw=0,
                label=f"{_label(group)} ejected",
            )
    ax.set_ylim(0, top)
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    _style(
        ax,
        "Upstream failures by cause (dashed: not found, not a failure; shaded: ejected)",
        "attempts/s",
    )


def panel_cache_size(ax: Any, snaps: Sequence[Snapshot], window: float) -> None:
    xs = _xs(snaps)
    entries = gauge_sum(snaps, P + "cache_entries", ("tier",))
    size = gauge_sum(snaps, P + "cache_bytes", ("tier",))
    for i, group in enumerate(sorted(entries)):
        ax.plot(xs, entries[group], color=f"C{i}", lw=2, label=f"{_label(group)} entries")
    ax.set_ylabel("entries")
    ax2 = ax.twinx()
    for i, group in enumerate(sorted(size)):
        mib = [v / 2**20 for v in size[group]]
        ax2.plot(xs, mib, color=f"C{i}", lw=1, ls="--", label=f"{_label(group)} MiB")
    ax2.set_ylabel("MiB (dashed)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    _style(ax, "Cache entries and bytes by tier", "entries")


PANELS: dict[str, Callable[[Any, Sequence[Snapshot], float], None]] = {
    "traffic_by_tenant": panel_traffic,
    "status_classes": panel_status,
    "cache_hit_rate": panel_hit_rate,
    "upstream_share": panel_share,
    "upstream_latency": panel_latency,
    "upstream_errors": panel_errors,
    "cache_size": panel_cache_size,
}


def render(snaps: Sequence[Snapshot], out: Path, window: float, title: str = "") -> list[Path]:
    plt = _plt()
    if len(snaps) < 3:
        sys.exit(f"render_dashboard: need at least 3 snapshots, got {len(snaps)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in PANELS.items():
        fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
        draw(ax, snaps, window)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(4, 2, figsize=(16, 15), dpi=80)
    for ax, draw in zip(axes.flat, PANELS.values(), strict=False):
        draw(ax, snaps, window)
    axes.flat[-1].axis("off")
    span = snaps[-1].t - snaps[0].t
    fig.suptitle(
        title or f"goproxy-router: {len(snaps)} scrapes over {span:.0f} s, rates over {window:g} s",
        fontsize=14,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = out / "dashboard.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


# ----------------------------------------------------------------------------- demo


@dataclass(slots=True)
class Phase:
    start: float
    what: str


DEMO_TENANTS = (("payments", 3.0), ("platform", 2.0), ("ci", 3.0), (None, 1.5))
DEMO_KINDS = (("info", 3.0), ("mod", 3.0), ("zip", 2.5), ("list", 1.5), ("latest", 1.0))


def _demo_rules(dest: Path, primary: str, mirror: str, cache_dir: Path) -> Path:
    import yaml

    rules = {
        "version": 1,
        "upstreams": [
            {"name": "primary", "url": primary, "tier": "L0", "cost_per_gb": 0.06},
            {"name": "mirror", "url": mirror, "tier": "L1", "cost_per_gb": 0.05},
        ],
        "pools": {"public": {"upstreams": ["primary", "mirror"], "fallback": "any-error"}},
        "selection": {
            "probe_interval": "2s",
            "ejection": {"consecutive_failures": 5, "base": "5s", "max": "20s"},
        },
        "cache": {
            "memory": "64MiB",
            "dir": str(cache_dir),
            "disk": "1GiB",
            "ttl": {"list": "5s", "latest": "5s", "not_found": "5s"},
        },
        "tenants": [{"id": "payments"}, {"id": "platform"}, {"id": "ci"}],
        "default": {"pool": "public", "anonymous": True},
    }
    dest.write_text(yaml.safe_dump(rules, sort_keys=False))
    return dest


def _weighted(rng: random.Random, table: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _demo_load(
    base: str, modules: list[tuple[str, str]], deadline: float, seed: int, phase: Callable[[], str]
) -> None:
    """One client: Zipf-ish module popularity, mixed kinds and tenants, some missing modules."""
    from support.gomod import escape_path, escape_version

    rng = random.Random(seed)
    while time.monotonic() < deadline:
        now = phase()
        burst = now == "ci burst + new modules"
        tenant = "ci" if burst and rng.random() < 0.5 else _weighted(rng, DEMO_TENANTS)
        if rng.random() < 0.07:
            path, version = f"example.com/demo/missing{rng.randrange(400)}", "v1.0.0"
        else:
            span = len(modules) if burst else len(modules) // 2
            index = min(int(rng.paretovariate(1.1)) - 1, span - 1)
            path, version = modules[index if rng.random() < 0.8 else rng.randrange(span)]
        kind = _weighted(rng, DEMO_KINDS)
        mod = escape_path(path)
        url = {
            "list": f"{base}/{mod}/@v/list",
            "latest": f"{base}/{mod}/@latest",
        }.get(kind, f"{base}/{mod}/@v/{escape_version(version)}.{kind}")
        req = urllib.request.Request(url)
        if tenant:
            req.add_header("X-Tenant-ID", tenant)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        except OSError:
            pass
        time.sleep(rng.uniform(0.0, 0.02 if burst else 0.04))


def run_demo(args: argparse.Namespace) -> list[Snapshot]:
    sys.path.insert(0, str(REPO / "tests"))
    from support.gomod import simple_module
    from support.goproxy_server import Fault, FixtureProxy

    rng = random.Random(7)
    modules = []
    for i in range(240):
        path = f"example.com/demo/lib{i:03d}"
        size = min(int(rng.paretovariate(1.5) * 8_000), 600_000)
        modules.append(
            simple_module(
                path, "v1.0.0", extra_files={"data.txt": os.urandom(size // 2).hex().encode()}
            )
        )
    primary = FixtureProxy(modules, name="primary").start_in_thread()
    mirror = FixtureProxy(modules[: int(len(modules) * 0.9)], name="mirror").start_in_thread()
    work = Path(tempfile.mkdtemp(prefix="goproxy-router-demo-"))
    rules = _demo_rules(work / "rules.yaml", primary.url, mirror.url, work / "cache")
    from support.gateway import free_port

    port = free_port()
    log = (work / "gateway.log").open("wb")
    binary = REPO / ".venv" / "bin" / "goproxy-router"
    cmd = [str(binary) if binary.exists() else "goproxy-router", "serve"]
    gateway = subprocess.Popen(
        [*cmd, "--rules", str(rules), "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, gateway)
        d = args.duration
        phases = [
            Phase(0.0, "warm-up"),
            Phase(0.25 * d, "primary answers 500"),
            Phase(0.50 * d, "recovered"),
            Phase(0.62 * d, "primary slow (1.5 s)"),
            Phase(0.78 * d, "ci burst + new modules"),
        ]
        start = time.monotonic()

        def current() -> str:
            now = time.monotonic() - start
            return [p.what for p in phases if p.start <= now][-1]

        deadline = start + d
        paths = [(m.path, m.version) for m in modules]
        clients = [
            threading.Thread(
                target=_demo_load, args=(base, paths, deadline, i, current), daemon=True
            )
            for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        stop = threading.Event()
        director = threading.Thread(
            target=_direct, args=(phases, start, primary, Fault, stop), daemon=True
        )
        director.start()
        snaps = scrape(f"{base}/metrics", args.interval, d, args.save)
        stop.set()
        for c in clients:
            c.join(timeout=15)
        print(f"demo: phases {[(round(p.start), p.what) for p in phases]}; work dir {work}")
        return snaps
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=40)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
        log.close()
        primary.stop()
        mirror.stop()


def _direct(
    phases: list[Phase], start: float, primary: Any, fault: Any, stop: threading.Event
) -> None:
    """Apply each phase's fault on the primary upstream when its time comes."""
    for phase in phases[1:]:
        while time.monotonic() - start < phase.start:
            if stop.wait(0.05):
                return
        primary.clear_faults()
        if phase.what.startswith("primary answers 500"):
            primary.add_fault(fault(status=500))
        elif phase.what.startswith("primary slow"):
            primary.add_fault(fault(delay=1.5))
        print(f"demo: t={time.monotonic() - start:5.1f}s {phase.what}", flush=True)
    stop.wait()
    primary.clear_faults()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"render_dashboard: the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit("render_dashboard: the gateway did not become ready")


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--scrape", metavar="URL", help="a gateway's /metrics URL")
    src.add_argument("--snapshots", metavar="DIR", type=Path, help="saved *.prom snapshots")
    src.add_argument("--demo", action="store_true", help="run fixtures + gateway + load (loopback)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (1)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds to scrape (60)")
    ap.add_argument("--window", type=float, default=5.0, help="rate window in seconds (5)")
    ap.add_argument("--clients", type=int, default=6, help="--demo: concurrent clients (6)")
    ap.add_argument("--save", type=Path, help="also save every scrape as DIR/metrics-T.prom")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="PNG folder")
    args = ap.parse_args(argv)
    _plt()  # fail early, before a minute of scraping, when matplotlib is missing
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    if args.snapshots is not None:
        snaps = load_snapshots(args.snapshots)
    elif args.demo:
        snaps = run_demo(args)
    else:
        snaps = scrape(args.scrape, args.interval, args.duration, args.save)
    for path in render(snaps, args.out, args.window):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
