"""Discrete-event simulation of the seed's "smart scheduling across clouds" scenario.

The seed (docs section 2.5) claims, against static DNS routing: mean pull latency
3210 ms -> 890 ms, cross-region bandwidth $12.7k -> $6.2k a month, hot cache hit
rate 58 % -> 89 %. Its scenario is not described, so every parameter below is
ours: only the direction and rough ratios can be compared, not the absolute values.

What is simulated, on one simulated clock:

* three upstreams in different "regions" (REGIONS): a time to first byte drawn
  from a lognormal around a median, a miss penalty when the module is not in
  that upstream's own LRU cache (the mirror fetches it from its origin first),
  a transfer time from the module's size and the upstream's throughput, and a
  bandwidth price per GB;
* a Zipf(alpha) workload over a catalogue of modules with lognormal sizes,
  Poisson arrivals, plus CI jobs that periodically pull a few hundred
  uniformly-random modules (they churn the mirrors' caches);
* policies: the gateway's real `router.state.local.SelectionState` (modes
  `ordered`, `best`, `weighted`; RTT-only weights) driven by the simulated
  clock and a seeded RNG, and a round-robin baseline. Observations reach the
  selection state when the request completes, as in the gateway (each attempt's
  time to first byte; a timed-out attempt reports the time waited; a refused
  connection reports none); idle upstreams are probed every `probe_interval`,
  as the gateway's probe loop does. One variant feeds RTT from probes only, as
  the gateway did before commit a833dce, to show what passive RTT changes.

Every policy sees the same request trace and the same per-request latency noise
(common random numbers), so differences come from the choices, not from luck.

A second run injects a slowdown and then an outage of one upstream and records
per-upstream traffic share and latency over time (PNG, needs matplotlib).

Run: .venv/bin/python benchmarks/selection_sim.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import platform
import random
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # the router package, also without an install

from router.core.model import Pool, Rules, Selection, Upstream  # noqa: E402
from router.core.model import Weights as RuleWeights  # noqa: E402
from router.state.local import SelectionState  # noqa: E402

HOUR = 3600.0
MONTH_HOURS = 30 * 24
FIRST_BYTE_TIMEOUT = 10.0  # the gateway's default `timeouts.first_byte`
REFUSED_SECONDS = 0.001  # a connection refused by a host that is down
PROBE_INTERVAL = 10.0  # the gateway's default `selection.probe_interval`
BIN_SECONDS = 120.0  # time-series resolution

SEED_CLAIMS = {
    "mean_ms": (3210.0, 890.0),
    "monthly_cost_usd": (12_700.0, 6_200.0),
    "hit_share_pct": (58.0, 89.0),
}


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True, slots=True)
class Region:
    """One upstream as the simulation sees it."""

    name: str
    role: str
    tier: Literal["L0", "L1", "L2", "L3"]
    cost_per_gb: float  # USD per GB delivered to the gateway
    ttfb_ms: float  # median time to first byte when the module is cached there
    sigma: float  # lognormal spread of that time
    mb_per_s: float  # transfer throughput to the gateway
    miss_ms: float  # median extra time to first byte on a cache miss
    miss_sigma: float
    cache_modules: int | None  # LRU capacity in modules; None: unbounded
    prewarm: float = 0.0  # share of the catalogue already cached at the start


# Pool order = configuration order: the plain GOPROXY list "local,regional,official".
REGIONS: tuple[Region, ...] = (
    Region(
        name="local",
        role="in-zone mirror: fast, small cache, pricier egress",
        tier="L2",
        cost_per_gb=0.06,
        ttfb_ms=20,
        sigma=0.35,
        mb_per_s=80,
        miss_ms=700,
        miss_sigma=0.6,
        cache_modules=1_500,
    ),
    Region(
        name="regional",
        role="regional mirror: bigger cache, cheap peering",
        tier="L1",
        cost_per_gb=0.02,
        ttfb_ms=80,
        sigma=0.40,
        mb_per_s=30,
        miss_ms=600,
        miss_sigma=0.6,
        cache_modules=6_000,
    ),
    Region(
        name="official",
        role="far official proxy: slow, internet egress, has (almost) everything",
        tier="L0",
        cost_per_gb=0.09,
        ttfb_ms=350,
        sigma=0.60,
        mb_per_s=6,
        miss_ms=2_500,  # a fetch from the origin VCS
        miss_sigma=0.7,
        cache_modules=None,
        prewarm=0.95,
    ),
)


@dataclass(frozen=True, slots=True)
class Workload:
    modules: int = 20_000
    alpha: float = 1.0
    rate: float = 3.0  # requests per second, developers and builds
    hours: float = 7.0  # simulated, warm-up included
    warmup_hours: float = 1.0  # not counted in the results (caches and estimates warm up)
    scan_every: float = 1800.0  # a CI scan every ... seconds
    scan_modules: int = 400  # ... pulling this many uniformly random modules
    scan_seconds: float = 120.0  # ... within this many seconds
    size_median_kb: float = 250.0
    size_sigma: float = 1.5
    size_max_mb: float = 200.0


@dataclass(frozen=True, slots=True)
class Fault:
    upstream: str
    start: float
    end: float
    kind: Literal["slow", "down"]
    factor: float = 1.0  # "slow": times to first byte are multiplied by this


@dataclass(slots=True)
class Trace:
    """The request stream, identical for every policy."""

    times: list[float]
    modules: list[int]
    scan: list[bool]
    z_ttfb: list[float]  # standard-normal noise, shared by all policies (common random numbers)
    z_miss: list[float]
    names: list[str]  # module paths by id
    sizes: list[int]  # bytes by id


def make_trace(w: Workload, seed: int) -> Trace:
    rng = random.Random(seed)
    names = [f"example.com/org{i % 97:02d}/mod{i:05d}" for i in range(w.modules)]
    cap = int(w.size_max_mb * 1e6)
    sizes = [
        min(cap, int(w.size_median_kb * 1e3 * math.exp(w.size_sigma * rng.gauss(0, 1))))
        for _ in range(w.modules)
    ]
    cum = list(itertools.accumulate(1.0 / (rank + 1) ** w.alpha for rank in range(w.modules)))
    end = w.hours * HOUR
    events: list[tuple[float, int, bool]] = []
    t = rng.expovariate(w.rate)
    arrivals: list[float] = []
    while t < end:
        arrivals.append(t)
        t += rng.expovariate(w.rate)
    picks = rng.choices(range(w.modules), cum_weights=cum, k=len(arrivals))
    events += [(t, m, False) for t, m in zip(arrivals, picks, strict=True)]
    start = w.scan_every
    while start < end:
        for _ in range(w.scan_modules):
            events.append((start + rng.uniform(0, w.scan_seconds), rng.randrange(w.modules), True))
        start += w.scan_every
    events.sort()
    n = len(events)
    return Trace(
        times=[e[0] for e in events],
        modules=[e[1] for e in events],
        scan=[e[2] for e in events],
        z_ttfb=[rng.gauss(0, 1) for _ in range(n)],
        z_miss=[rng.gauss(0, 1) for _ in range(n)],
        names=names,
        sizes=sizes,
    )


# --------------------------------------------------------------------------- upstreams


class SimUpstream:
    """An upstream with its own LRU cache and the faults scheduled for it."""

    def __init__(self, region: Region, modules: int, faults: Sequence[Fault], seed: int) -> None:
        self.region = region
        self.faults = [f for f in faults if f.upstream == region.name]
        self.cache: OrderedDict[int, None] = OrderedDict()
        if region.prewarm:
            rng = random.Random(seed)
            for m in rng.sample(range(modules), int(modules * region.prewarm)):
                self.cache[m] = None

    def fault(self, now: float) -> Fault | None:
        for f in self.faults:
            if f.start <= now < f.end:
                return f
        return None

    def fetch(self, module: int) -> bool:
        """The upstream serves `module`: True when it was already cached."""
        cache = self.cache
        if module in cache:
            cache.move_to_end(module)
            return True
        cache[module] = None
        cap = self.region.cache_modules
        if cap is not None and len(cache) > cap:
            cache.popitem(last=False)
        return False

    def probe_ttfb(self, z: float) -> float:
        r = self.region
        return r.ttfb_ms * math.exp(r.sigma * z) / 1e3


@dataclass(frozen=True, slots=True)
class Attempt:
    upstream: str
    ok: bool
    rtt: float | None  # time to first byte, when there was an answer
    seconds: float  # time spent on this attempt
    hit: bool = False


def attempt(up: SimUpstream, module: int, size: int, now: float, z1: float, z2: float) -> Attempt:
    r = up.region
    fault = up.fault(now)
    if fault is not None and fault.kind == "down":
        return Attempt(r.name, False, None, REFUSED_SECONDS)
    factor = fault.factor if fault is not None else 1.0
    hit = up.fetch(module)
    ttfb = r.ttfb_ms * math.exp(r.sigma * z1)
    if not hit:
        ttfb += r.miss_ms * math.exp(r.miss_sigma * z2)
    ttfb = ttfb * factor / 1e3
    if ttfb > FIRST_BYTE_TIMEOUT:  # the gateway counts the time waited as the RTT sample
        return Attempt(r.name, False, FIRST_BYTE_TIMEOUT, FIRST_BYTE_TIMEOUT, hit)
    return Attempt(r.name, True, ttfb, ttfb + size / (r.mb_per_s * 1e6), hit)


# --------------------------------------------------------------------------- policies


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class PolicySpec:
    key: str
    title: str
    kind: Literal["state", "round-robin"]
    mode: Literal["ordered", "best", "weighted"] = "weighted"
    weights: tuple[float, float, float] = (0.40, 0.35, 0.25)
    first: str | None = None  # ordered: the upstream moved to the front of the pool
    # False: requests do not feed RTT, only probes do (the gateway before commit a833dce)
    passive_rtt: bool = True


POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec("static-local", "static: local first (pool order)", "state", "ordered"),
    PolicySpec("static-regional", "static: regional first", "state", "ordered", first="regional"),
    PolicySpec("static-official", "static: official first", "state", "ordered", first="official"),
    PolicySpec("round-robin", "round-robin", "round-robin"),
    PolicySpec("rtt-only", "RTT only (best, 1/0/0)", "state", "best", weights=(1.0, 0.0, 0.0)),
    PolicySpec("best", "selection: best", "state", "best"),
    PolicySpec("weighted", "selection: weighted", "state", "weighted"),
    PolicySpec(
        "weighted-probe-rtt",
        "selection: weighted, RTT from probes only",
        "state",
        "weighted",
        passive_rtt=False,
    ),
)
OUTAGE_POLICIES = (
    "static-local",
    "static-regional",
    "round-robin",
    "best",
    "weighted",
    "weighted-probe-rtt",
)


def make_rules(order: Sequence[Region], spec: PolicySpec) -> Rules:
    ups = tuple(
        Upstream(
            name=r.name, url=f"http://{r.name}.invalid", tier=r.tier, cost_per_gb=r.cost_per_gb
        )
        for r in order
    )
    rtt, cost, heat = spec.weights
    return Rules(
        upstreams=ups,
        pools=(Pool(name="main", upstreams=tuple(u.name for u in ups), fallback="any-error"),),
        selection=Selection(weights=RuleWeights(rtt=rtt, cost=cost, heat=heat), mode=spec.mode),
    )


class Policy:
    """Ranks the upstreams for a request and learns from completed requests."""

    def __init__(self, spec: PolicySpec, clock: SimClock, seed: int) -> None:
        self.spec = spec
        order = list(REGIONS)
        if spec.first is not None:
            order.sort(key=lambda r: r.name != spec.first)  # stable: the rest keep pool order
        self.names = [r.name for r in order]
        self.state: SelectionState | None = None
        self._next = 0
        if spec.kind == "state":
            rules = make_rules(order, spec)
            self.state = SelectionState(rules, clock=clock, rng=random.Random(seed))
            self._pool = [rules.upstream(n) for n in self.names]

    def rank(self, module: str) -> list[str]:
        if self.state is None:  # round-robin: rotate the first, keep the rest in pool order
            i = self._next
            self._next = (i + 1) % len(self.names)
            return self.names[i:] + self.names[:i]
        return [s.candidate.name for s in self.state.order(self._pool, module)]

    def learn(self, attempts: Sequence[Attempt], module: str, nbytes: int) -> None:
        if self.state is None:
            return
        for a in attempts:
            rtt = a.rtt if self.spec.passive_rtt else None
            self.state.observe(a.upstream, failed=not a.ok, rtt=rtt)
        if attempts and attempts[-1].ok:
            self.state.served(attempts[-1].upstream, module, nbytes)


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class Series:
    """Per time bin: requests served by each upstream, latency sum, failures."""

    served: dict[str, list[int]]
    latency_sum: list[float]
    requests: list[int]
    failures: list[int]

    @classmethod
    def empty(cls, bins: int) -> Series:
        return cls({r.name: [0] * bins for r in REGIONS}, [0.0] * bins, [0] * bins, [0] * bins)


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    bytes: int = 0
    hits: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    fallbacks: int = 0


@dataclass(frozen=True, slots=True)
class PolicyResult:
    key: str
    title: str
    requests: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    monthly_cost_usd: float
    hit_share_pct: float
    share_pct: dict[str, float]
    failed: int
    fallback_pct: float
    wall_seconds: float


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def simulate(
    spec: PolicySpec,
    trace: Trace,
    w: Workload,
    faults: Sequence[Fault],
    seed: int,
    hours: float,
) -> tuple[PolicyResult, Series]:
    started = time.perf_counter()
    clock = SimClock()
    policy = Policy(spec, clock, seed + 1)
    ups = {r.name: SimUpstream(r, w.modules, faults, seed + 2) for r in REGIONS}
    noise = random.Random(seed + 3)  # fallback attempts and probes
    end = hours * HOUR
    warm = w.warmup_hours * HOUR
    bins = math.ceil(end / BIN_SECONDS)
    series = Series.empty(bins)
    tally = Tally()
    # Completions and probes, by time: (time, seq, attempts, module, bytes); probes: attempts None.
    pending: list[tuple[float, int, list[Attempt] | None, str, int]] = []
    seq = itertools.count()
    if policy.state is not None:
        heapq.heappush(pending, (PROBE_INTERVAL, next(seq), None, "", 0))

    def drain(until: float) -> None:
        while pending and pending[0][0] <= until:
            at, _, attempts, module, nbytes = heapq.heappop(pending)
            clock.now = at
            if attempts is not None:
                policy.learn(attempts, module, nbytes)
                continue
            state = policy.state
            assert state is not None
            for name, up in ups.items():
                if state.idle(name, PROBE_INTERVAL):
                    down = (f := up.fault(at)) is not None and f.kind == "down"
                    rtt = None if down else up.probe_ttfb(noise.gauss(0, 1))
                    state.observe(name, failed=down, rtt=rtt)
            heapq.heappush(pending, (at + PROBE_INTERVAL, next(seq), None, "", 0))

    stop = bisect.bisect_left(trace.times, end)
    for i in range(stop):
        now = trace.times[i]
        drain(now)
        clock.now = now
        module = trace.modules[i]
        name = trace.names[module]
        size = trace.sizes[module]
        attempts: list[Attempt] = []
        elapsed = 0.0
        for k, up_name in enumerate(policy.rank(name)):
            if k == 0:
                z1, z2 = trace.z_ttfb[i], trace.z_miss[i]
            else:
                z1, z2 = noise.gauss(0, 1), noise.gauss(0, 1)
            a = attempt(ups[up_name], module, size, now + elapsed, z1, z2)
            attempts.append(a)
            elapsed += a.seconds
            if a.ok:
                break
        ok = attempts[-1].ok
        heapq.heappush(pending, (now + elapsed, next(seq), attempts, name, size if ok else 0))
        b = int(now // BIN_SECONDS)
        series.requests[b] += 1
        if ok:
            series.served[attempts[-1].upstream][b] += 1
            series.latency_sum[b] += elapsed
        else:
            series.failures[b] += 1
        if now < warm:
            continue
        if len(attempts) > 1:
            tally.fallbacks += 1
        if not ok:
            tally.failed += 1
            continue
        last = attempts[-1]
        tally.latencies.append(elapsed)
        tally.bytes += size
        tally.cost_usd += size / 1e9 * ups[last.upstream].region.cost_per_gb
        tally.hits += last.hit
        tally.served_by[last.upstream] += 1
    lat = sorted(tally.latencies)
    n = len(lat)
    measured_hours = hours - w.warmup_hours
    result = PolicyResult(
        key=spec.key,
        title=spec.title,
        requests=n + tally.failed,
        mean_ms=round(1e3 * sum(lat) / max(1, n), 1),
        p50_ms=round(1e3 * percentile(lat, 50), 1),
        p95_ms=round(1e3 * percentile(lat, 95), 1),
        p99_ms=round(1e3 * percentile(lat, 99), 1),
        monthly_cost_usd=round(tally.cost_usd * MONTH_HOURS / measured_hours, 0),
        hit_share_pct=round(100 * tally.hits / max(1, n), 1),
        share_pct={r.name: round(100 * tally.served_by[r.name] / max(1, n), 1) for r in REGIONS},
        failed=tally.failed,
        fallback_pct=round(100 * tally.fallbacks / max(1, n + tally.failed), 2),
        wall_seconds=round(time.perf_counter() - started, 2),
    )
    return result, series


# --------------------------------------------------------------------------- outage run


@dataclass(frozen=True, slots=True)
class Window:
    label: str
    start: float
    end: float


def outage_plan(upstream: str, quick: bool) -> tuple[list[Fault], list[Window], float]:
    """Slow (x20) for 30 min, healthy 30 min, down for 20 min, then recovered."""
    h = HOUR
    if quick:
        faults = [
            Fault(upstream, 1.25 * h, 1.5 * h, "slow", 20.0),
            Fault(upstream, 1.75 * h, 2.0 * h, "down"),
        ]
        windows = [
            Window("before", 1.0 * h, 1.25 * h),
            Window("slow x20", 1.25 * h, 1.5 * h),
            Window("between", 1.5 * h, 1.75 * h),
            Window("down", 1.75 * h, 2.0 * h),
            Window("after", 2.0 * h, 2.5 * h),
        ]
        return faults, windows, 2.5
    faults = [
        Fault(upstream, 1.5 * h, 2.0 * h, "slow", 20.0),
        Fault(upstream, 2.5 * h, 2.0 * h + 50 * 60, "down"),
    ]
    windows = [
        Window("before", 1.0 * h, 1.5 * h),
        Window("slow x20", 1.5 * h, 2.0 * h),
        Window("between", 2.0 * h, 2.5 * h),
        Window("down", 2.5 * h, 2.0 * h + 50 * 60),
        Window("after, first 10 min", 2.0 * h + 50 * 60, 3.0 * h),
        Window("after, next 30 min", 3.0 * h, 3.5 * h),
    ]
    return faults, windows, 3.5


def window_stats(series: Series, windows: Sequence[Window], upstream: str) -> list[dict[str, Any]]:
    out = []
    for win in windows:
        lo, hi = int(win.start // BIN_SECONDS), int(win.end // BIN_SECONDS)
        served = sum(sum(series.served[r.name][lo:hi]) for r in REGIONS)
        out.append(
            {
                "window": win.label,
                "mean_ms": round(1e3 * sum(series.latency_sum[lo:hi]) / max(1, served), 1),
                "faulty_share_pct": round(
                    100 * sum(series.served[upstream][lo:hi]) / max(1, served), 1
                ),
                "failed": sum(series.failures[lo:hi]),
            }
        )
    return out


def recovery_minutes(
    series: Series, upstream: str, before: Window, after: float, end: float
) -> float | None:
    """Minutes after `after` until `upstream` serves at least half its `before` share
    (in one bin); None when it had no share before or never got it back."""

    def share(b: int) -> float:
        total = sum(series.served[r.name][b] for r in REGIONS)
        return series.served[upstream][b] / total if total else 0.0

    lo, hi = int(before.start // BIN_SECONDS), int(before.end // BIN_SECONDS)
    base = sum(share(b) for b in range(lo, hi)) / max(1, hi - lo)
    if base < 0.05:
        return None
    for b in range(int(after // BIN_SECONDS), int(end // BIN_SECONDS)):
        if share(b) >= base / 2:
            return round(((b + 1) * BIN_SECONDS - after) / 60, 1)
    return None


# --------------------------------------------------------------------------- output


def fmt_money(v: float) -> str:
    return f"${v:,.0f}"


def results_table(results: Sequence[PolicyResult]) -> str:
    names = [r.name for r in REGIONS]
    head = (
        "| policy | mean ms | P50 ms | P95 ms | P99 ms | cost / month | cache-hit share | "
        + " | ".join(f"{n} share" for n in names)
        + " | fallbacks |"
    )
    lines = [head, "|" + "---|" * (8 + len(names))]
    for r in results:
        shares = " | ".join(f"{r.share_pct[n]:.1f} %" for n in names)
        lines.append(
            f"| {r.title} | {r.mean_ms:,.0f} | {r.p50_ms:,.0f} | {r.p95_ms:,.0f} | "
            f"{r.p99_ms:,.0f} | {fmt_money(r.monthly_cost_usd)} | {r.hit_share_pct:.1f} % | "
            f"{shares} | {r.fallback_pct:.2f} % |"
        )
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return f"x{b / a:.2f}" if a else "-"


def seed_table(by_key: dict[str, PolicyResult]) -> str:
    ours = by_key["weighted"]
    bases = [("static-local", "static: local first"), ("static-official", "static: official")]
    lines = [
        "| metric | seed: static DNS -> smart | seed ratio | "
        + " | ".join(f"ours: {t} -> weighted | ratio" for _, t in bases)
        + " |",
        "|---|---|---|" + "---|---|" * len(bases),
    ]
    labels = {
        "mean_ms": ("mean pull latency", lambda v: f"{v:,.0f} ms"),
        "monthly_cost_usd": ("bandwidth cost / month", fmt_money),
        "hit_share_pct": ("cache-hit share", lambda v: f"{v:.1f} %"),
    }
    for metric, (label, fmt) in labels.items():
        before, after = SEED_CLAIMS[metric]
        cells = [f"{label}", f"{fmt(before)} -> {fmt(after)}", ratio(before, after)]
        for key, _ in bases:
            base = getattr(by_key[key], metric)
            cells += [
                f"{fmt(base)} -> {fmt(getattr(ours, metric))}",
                ratio(base, getattr(ours, metric)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def outage_table(
    outage: dict[str, list[dict[str, Any]]],
    titles: dict[str, str],
    recovery: dict[str, float | None],
) -> str:
    windows = [w["window"] for w in next(iter(outage.values()))]
    lines = [
        "| policy | " + " | ".join(windows) + " | back to half its share after |",
        "|---|" + "---|" * (len(windows) + 1),
    ]
    for key, stats in outage.items():
        cells = [
            f"{s['mean_ms']:,.0f} ms, {s['faulty_share_pct']:.0f} %"
            + (f", {s['failed']} failed" if s["failed"] else "")
            for s in stats
        ]
        back = recovery.get(key)
        cells.append("-" if back is None else f"{back:g} min")
        lines.append(f"| {titles[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(
    series: dict[str, Series],
    titles: dict[str, str],
    faults: Sequence[Fault],
    hours: float,
    path: Path,
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is missing: no plot. Install it with: .venv/bin/pip install matplotlib",
            file=sys.stderr,
        )
        return False
    share_keys = [k for k in ("weighted", "weighted-probe-rtt") if k in series]
    fig, axes = plt.subplots(
        len(share_keys) + 1, 1, figsize=(13, 3.2 * (len(share_keys) + 1)), sharex=True
    )
    lo = 1.0  # hours: the warm-up is not shown
    first, last = int(lo * HOUR // BIN_SECONDS), int(hours * HOUR // BIN_SECONDS)
    x = [(b + 0.5) * BIN_SECONDS / HOUR for b in range(first, last)]
    colors = {"local": "tab:green", "regional": "tab:blue", "official": "tab:red"}
    for ax, key in zip(axes, share_keys, strict=False):
        s = series[key]
        totals = [max(1, sum(s.served[r.name][b] for r in REGIONS)) for b in range(first, last)]
        shares = [
            [100 * s.served[r.name][b] / t for b, t in zip(range(first, last), totals, strict=True)]
            for r in REGIONS
        ]
        ax.stackplot(
            x, *shares, labels=[r.name for r in REGIONS], colors=[colors[r.name] for r in REGIONS]
        )
        ax.set_ylabel("traffic share %")
        ax.set_ylim(0, 100)
        ax.set_title(f"{titles[key]}: share of requests served by each upstream")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax = axes[-1]
    for key, s in series.items():
        y = [
            1e3 * s.latency_sum[b] / max(1, sum(s.served[r.name][b] for r in REGIONS))
            for b in range(first, last)
        ]
        ax.plot(x, y, label=titles[key], linewidth=1.2)
    ax.set_yscale("log")
    ax.set_ylabel("mean pull latency, ms (log)")
    ax.set_xlabel("simulated hours")
    ax.set_title(f"mean latency per {BIN_SECONDS / 60:.0f}-minute bin")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for a in axes:
        for f in faults:
            a.axvspan(
                f.start / HOUR,
                f.end / HOUR,
                facecolor="none",
                edgecolor="black",
                hatch="//" if f.kind == "slow" else "xx",
                linewidth=0.8,
            )
    fault_text = "; ".join(
        f"{f.upstream} {f.kind}{f' x{f.factor:g}' if f.kind == 'slow' else ''} "
        f"{f.start / HOUR:.2f}-{f.end / HOUR:.2f} h"
        for f in faults
    )
    fig.suptitle(f"Outage run (hatched: // slow, xx down): {fault_text}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    p.add_argument(
        "--fault-upstream",
        default="auto",
        choices=["auto", *(r.name for r in REGIONS)],
        help="the upstream slowed and then taken down (auto: weighted mode's favourite)",
    )
    p.add_argument("--json", type=Path, default=BENCH_DIR / "out" / "selection_sim.json")
    p.add_argument("--png", type=Path, default=BENCH_DIR / "selection_sim.png")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    w = Workload(hours=3.0) if args.quick else Workload()
    trace = make_trace(w, args.seed)
    titles = {s.key: s.title for s in POLICIES}
    print(
        f"trace: {len(trace.times):,} requests over {w.hours:g} simulated hours "
        f"({w.warmup_hours:g} h warm-up not counted), {w.modules:,} modules, "
        f"Zipf alpha {w.alpha:g}, seed {args.seed}",
        file=sys.stderr,
    )
    results: list[PolicyResult] = []
    for spec in POLICIES:
        result, _ = simulate(spec, trace, w, (), args.seed, w.hours)
        results.append(result)
        print(f"  {spec.key}: {result.wall_seconds:.1f}s", file=sys.stderr)
    by_key = {r.key: r for r in results}

    victim = args.fault_upstream
    if victim == "auto":
        victim = max(by_key["weighted"].share_pct.items(), key=lambda kv: kv[1])[0]
    faults, windows, outage_hours = outage_plan(victim, args.quick)
    outage: dict[str, list[dict[str, Any]]] = {}
    outage_series: dict[str, Series] = {}
    outage_results: dict[str, PolicyResult] = {}
    recovery: dict[str, float | None] = {}
    down_end = max(f.end for f in faults if f.kind == "down")
    for spec in POLICIES:
        if spec.key not in OUTAGE_POLICIES:
            continue
        result, series = simulate(spec, trace, w, faults, args.seed, outage_hours)
        outage_series[spec.key] = series
        outage_results[spec.key] = result
        outage[spec.key] = window_stats(series, windows, victim)
        recovery[spec.key] = recovery_minutes(
            series, victim, windows[0], down_end, outage_hours * HOUR
        )
        print(f"  outage {spec.key}: {result.wall_seconds:.1f}s", file=sys.stderr)

    plotted = False if args.no_plot else plot(outage_series, titles, faults, outage_hours, args.png)

    print("## Steady state (no faults)\n")
    print(results_table(results))
    print("\n## Beside the seed's claims (scenario parameters are ours: compare directions)\n")
    print(seed_table(by_key))
    print(f"\n## Outage of `{victim}`: mean latency, its traffic share, failures\n")
    print(outage_table(outage, titles, recovery))
    print()
    print(results_table(list(outage_results.values())))
    if plotted:
        print(f"\nplot: {args.png}")

    doc = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seed": args.seed,
        "workload": asdict(w),
        "regions": [asdict(r) for r in REGIONS],
        "first_byte_timeout_s": FIRST_BYTE_TIMEOUT,
        "probe_interval_s": PROBE_INTERVAL,
        "requests_in_trace": len(trace.times),
        "seed_claims": {k: {"static": a, "smart": b} for k, (a, b) in SEED_CLAIMS.items()},
        "steady": [asdict(r) for r in results],
        "outage": {
            "upstream": victim,
            "faults": [asdict(f) for f in faults],
            "windows": outage,
            "recovery_minutes_after_down": recovery,
            "results": [asdict(r) for r in outage_results.values()],
            "bin_seconds": BIN_SECONDS,
            "series": {k: asdict(s) for k, s in outage_series.items()},
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"json: {args.json}  (total {doc['wall_seconds']}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
