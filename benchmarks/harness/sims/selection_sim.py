"""Upstream selection under conditions that change: a scenario-driven simulation.

The seed (docs section 2.5) claims, against static DNS routing: mean pull latency
3210 ms -> 890 ms, cross-region bandwidth $12.7k -> $6.2k a month, hot cache hit
rate 58 % -> 89 %. It does not describe its scenario, so every parameter below is
ours: compare directions and rough ratios, never absolute values.

Nothing here opens a socket. Time is one simulated clock; the gateway's real
`router.state.local.SelectionState` (and through it the pure `router.core.selection`)
ranks every request, fed the way the gateway feeds it: `observe` with the first-byte
time of small answers, `transferred` with a zip's body time, `served` for heat, the
probe loop's `probes_due`/`probed` every simulated second.

The world:

* three upstreams (UPSTREAMS): an in-zone mirror (fast, small cache, pricier
  egress), a regional mirror (cheap, bigger cache), the far official proxy (slow,
  has nearly everything). Each has its own LRU cache that fills with what is sent to
  it (cache warmth follows the traffic, hence heat), a miss penalty (the mirror asks
  its origin), a throughput, a price per GB, and a capacity: its times to first byte
  grow as 1 / (1 - load / capacity) with the load sent to it (so herding hurts);
* a pull is a `.info` (small) then a `.zip`, each ranked on its own;
* Zipf(1.0) popularity over 20,000 modules, lognormal sizes, Poisson arrivals, and a
  CI scan of 400 random modules every 30 minutes;
* REPLICAS gateway replicas behind a round-robin balancer, each with its own
  selection state, sharing heat, RTT, ejections and cost overrides the way
  `router.fleet.selection.RedisSync` does (pushed every 250 ms, pulled every second,
  heat every five);
* a timeline (SCENARIO) of changes: the regional mirror degrades for ten minutes and
  recovers, its region goes down for twenty, its price rises mid-run (set at run time,
  as `goproxy-router cost set` does), and the popular modules change.

Policies: our selection (`weighted`, the default; and `best`), every fixed order of
the three (the `ordered` pool: health still moves an ejected upstream last, failed
attempts fall through), and round robin. All see the same requests and the same
latency noise (common random numbers), so differences come from the choices.

Run: .venv/bin/python -m benchmarks.harness.sims.selection_sim [--quick] [--seed N] [--no-plot]
Plots need matplotlib: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BENCH_DIR.parent))  # the router package, also without an install

from router.core.model import Pool, Rules, Selection, Upstream  # noqa: E402
from router.state.local import SelectionState  # noqa: E402

MINUTE, HOUR = 60.0, 3600.0
MONTH_HOURS = 30 * 24
FIRST_BYTE_TIMEOUT = 10.0  # the gateway's default timeouts.first_byte
REFUSED = 0.001  # a refused connection fails at once
REPLICAS = 3
PROBE_TICK = 1.0  # the simulated probe loop looks for due probes this often
PROBE_INTERVAL = 10.0  # the default selection.probe_interval
LOAD_TAU = 10.0  # seconds over which an upstream's load is averaged
MAX_UTILISATION = 0.95
BIN = 60.0  # time-series resolution, seconds
SMALL_BYTES = 600  # a .info answer

SEED_CLAIMS = {"mean_ms": (3210.0, 890.0), "cost": (12_700.0, 6_200.0), "hits": (58.0, 89.0)}


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    tier: Literal["L0", "L1", "L2"]
    cost_per_gb: float
    ttfb_ms: float  # median first byte of a cached answer, unloaded
    sigma: float
    mb_per_s: float
    miss_ms: float  # median extra first-byte time on a miss
    cache_modules: int | None  # LRU size; None: unbounded
    capacity: float  # requests per second at which its queue would grow without bound
    prewarm: float = 0.0


# Pool order (configuration order) = the plain GOPROXY list "local,regional,official".
UPSTREAMS = (
    Spec("local", "L2", 0.06, 20, 0.35, 80, 700, 2_000, capacity=9.0),
    Spec("regional", "L1", 0.02, 60, 0.40, 40, 600, 8_000, capacity=9.0),
    Spec("official", "L0", 0.09, 350, 0.60, 8, 2_500, None, capacity=200.0, prewarm=0.95),
)
NAMES = tuple(s.name for s in UPSTREAMS)


@dataclass(frozen=True, slots=True)
class Change:
    """One scheduled change of the world."""

    at: float
    until: float
    upstream: str
    kind: Literal["slow", "down", "cost", "popularity"]
    value: float = 1.0  # slow: times to first byte x value (and throughput / value); cost: USD/GB


SCENARIO = (
    Change(1.0 * HOUR, 1.0 * HOUR + 10 * MINUTE, "regional", "slow", 8.0),
    Change(2.0 * HOUR, 2.0 * HOUR + 20 * MINUTE, "regional", "down"),
    Change(3.0 * HOUR, 99 * HOUR, "regional", "cost", 0.11),
    Change(4.0 * HOUR, 99 * HOUR, "", "popularity"),
)
PHASES = (  # labelled windows for the table over time
    ("steady", 0.5 * HOUR, 1.0 * HOUR),
    ("regional slow x8", 1.0 * HOUR, 1.0 * HOUR + 10 * MINUTE),
    ("recovered", 1.0 * HOUR + 10 * MINUTE, 2.0 * HOUR),
    ("regional down", 2.0 * HOUR, 2.0 * HOUR + 20 * MINUTE),
    ("back up", 2.0 * HOUR + 20 * MINUTE, 3.0 * HOUR),
    ("regional dearer", 3.0 * HOUR, 4.0 * HOUR),
    ("new hot set", 4.0 * HOUR, 5.0 * HOUR),
)


@dataclass(frozen=True, slots=True)
class Workload:
    modules: int = 20_000
    alpha: float = 1.0
    rate: float = 3.0  # pulls per second over all replicas
    hours: float = 5.0
    warmup: float = 0.5 * HOUR  # not counted
    scan_every: float = 30 * MINUTE
    scan_modules: int = 400
    scan_seconds: float = 120.0
    size_median_kb: float = 250.0
    size_sigma: float = 1.5
    size_max_mb: float = 200.0


@dataclass(slots=True)
class Trace:
    """The pulls, identical for every policy, with their latency noise."""

    times: list[float]
    modules: list[int]
    noise: list[tuple[float, float, float, float]]  # z for small ttfb, small miss, zip, zip miss
    sizes: list[int]
    names: list[str]


def make_trace(w: Workload, seed: int) -> Trace:
    rng = random.Random(seed)
    names = [f"example.com/org{i % 97:02d}/mod{i:05d}" for i in range(w.modules)]
    cap = int(w.size_max_mb * 1e6)
    sizes = [
        min(cap, int(w.size_median_kb * 1e3 * math.exp(w.size_sigma * rng.gauss(0, 1))))
        for _ in range(w.modules)
    ]
    cum = list(itertools.accumulate(1.0 / (r + 1) ** w.alpha for r in range(w.modules)))
    shifted = list(range(w.modules))
    random.Random(seed + 7).shuffle(shifted)  # the popularity ranks after the change
    shift_at = next(c.at for c in SCENARIO if c.kind == "popularity")
    end = w.hours * HOUR
    events: list[tuple[float, int]] = []
    t = rng.expovariate(w.rate)
    while t < end:
        r = rng.choices(range(w.modules), cum_weights=cum)[0]
        events.append((t, shifted[r] if t >= shift_at else r))
        t += rng.expovariate(w.rate)
    start = w.scan_every
    while start < end:
        for _ in range(w.scan_modules):
            events.append((start + rng.uniform(0, w.scan_seconds), rng.randrange(w.modules)))
        start += w.scan_every
    events.sort()
    noise = [tuple(rng.gauss(0, 1) for _ in range(4)) for _ in events]
    return Trace(
        [e[0] for e in events],
        [e[1] for e in events],
        noise,  # type: ignore[arg-type]
        sizes,
        names,
    )


class SimUpstream:
    """One upstream: its cache, its load, and what the scenario does to it."""

    def __init__(self, spec: Spec, modules: int, seed: int) -> None:
        self.spec = spec
        self.cache: OrderedDict[int, None] = OrderedDict()
        if spec.prewarm:
            for m in random.Random(seed).sample(range(modules), int(modules * spec.prewarm)):
                self.cache[m] = None
        self._load = 0.0  # exponentially decayed request count
        self._stamp = 0.0
        self.changes = [c for c in SCENARIO if c.upstream == spec.name]

    def change(self, kind: str, now: float) -> Change | None:
        for c in self.changes:
            if c.kind == kind and c.at <= now < c.until:
                return c
        return None

    def load(self, now: float) -> float:
        """Requests per second recently sent to it."""
        return self._load * math.exp(-(now - self._stamp) / LOAD_TAU) / LOAD_TAU

    def _count(self, now: float) -> None:
        self._load = self._load * math.exp(-(now - self._stamp) / LOAD_TAU) + 1.0
        self._stamp = now

    def queueing(self, now: float) -> float:
        rho = min(MAX_UTILISATION, self.load(now) / self.spec.capacity)
        return 1.0 / (1.0 - rho)

    def fetch(self, module: int) -> bool:
        """Serve `module`: True when it was cached here (it is cached afterwards)."""
        if module in self.cache:
            self.cache.move_to_end(module)
            return True
        self.cache[module] = None
        cap = self.spec.cache_modules
        if cap is not None and len(self.cache) > cap:
            self.cache.popitem(last=False)
        return False

    def probe(self, now: float, z: float) -> float | None:
        if self.change("down", now):
            return None
        slow = self.change("slow", now)
        factor = slow.value if slow else 1.0
        s = self.spec
        return s.ttfb_ms * math.exp(s.sigma * z) * factor * self.queueing(now) / 1e3


@dataclass(frozen=True, slots=True)
class Attempt:
    upstream: str
    ok: bool
    ttfb: float | None  # first byte, when there was an answer (or the time waited)
    body: float  # seconds of body transfer
    hit: bool

    @property
    def seconds(self) -> float:
        return (self.ttfb or REFUSED) + self.body


def attempt(
    up: SimUpstream, module: int, nbytes: int, now: float, z: float, zmiss: float
) -> Attempt:
    s = up.spec
    if up.change("down", now):
        return Attempt(s.name, False, None, 0.0, False)
    up._count(now)
    slow = up.change("slow", now)
    factor = slow.value if slow else 1.0
    hit = up.fetch(module)
    ttfb = s.ttfb_ms * math.exp(s.sigma * z)
    if not hit:
        ttfb += s.miss_ms * math.exp(0.6 * zmiss)
    ttfb = ttfb * factor * up.queueing(now) / 1e3
    if ttfb > FIRST_BYTE_TIMEOUT:
        return Attempt(s.name, False, FIRST_BYTE_TIMEOUT, 0.0, hit)
    return Attempt(s.name, True, ttfb, nbytes / (s.mb_per_s * 1e6 / factor), hit)


# --------------------------------------------------------------------------- sharing


class SharedStore:
    """What Redis holds for the fleet, with RedisSync's semantics (heat buckets, the
    other replicas' RTT as a mean of fresh estimates, ejections, cost overrides)."""

    def __init__(self, states: Sequence[SelectionState], *, heat: bool = True) -> None:
        self.states = states
        self.share_heat = heat  # an ordered pool ranks without heat: nothing to share
        self.heat: dict[tuple[str, int], Counter[str]] = {}
        self.rtt: dict[str, dict[int, tuple[float, float]]] = {n: {} for n in NAMES}
        self.eject: dict[str, float] = {}
        self.costs: dict[str, float] = {}
        self.dirty: set[tuple[str, int]] = set()  # heat buckets changed since the last pull
        for s in states:
            s.shared = heat

    def flush(self, now: float) -> None:
        for i, s in enumerate(self.states):
            heat, s.pending_heat = s.pending_heat, {}
            for (up, bucket, module), n in heat.items():
                # Counter holds float heat fine at run time; its stubs say int.
                self.heat.setdefault((up, bucket), Counter())[module] += n  # type: ignore[assignment]
                self.dirty.add((up, bucket))
            for name, until in s.pending_ejections.items():
                self.eject[name] = max(until, self.eject.get(name, 0.0))
            s.pending_ejections = {}
            for name in NAMES:
                value = s.live(name).rtt.value
                if value is not None:
                    self.rtt[name][i] = (value, now)

    def refresh(self, now: float) -> None:
        for i, s in enumerate(self.states):
            s.cost_overrides = dict(self.costs)
            for name in NAMES:
                fresh = [v for j, (v, t) in self.rtt[name].items() if j != i and now - t <= 30]
                live = s.live(name)
                live.shared_rtt = sum(fresh) / len(fresh) if fresh else None
                if name in self.eject:
                    live.health.eject_until(self.eject[name])

    def refresh_heat(self, now: float) -> None:
        """Every replica adopts the buckets that changed (unchanged ones it has already)."""
        for s in self.states:
            current = s.heat.bucket_of(now)
            for up, bucket in self.dirty:
                if current - s.heat.buckets < bucket <= current:
                    counts = self.heat[(up, bucket)].most_common(s.heat.top_n)
                    s.heat.replace(up, bucket, dict(counts))
        self.dirty.clear()
        oldest = self.states[0].heat.bucket_of(now) - self.states[0].heat.buckets
        for key in [k for k in self.heat if k[1] <= oldest]:
            del self.heat[key]


# --------------------------------------------------------------------------- policies


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class PolicySpec:
    key: str
    title: str
    kind: Literal["selection", "round-robin"]
    mode: Literal["ordered", "best", "weighted"] = "weighted"
    order: tuple[str, ...] = NAMES
    shared: bool = True  # replicas share state through the store


def policies() -> list[PolicySpec]:
    out = [
        PolicySpec("weighted", "ours: weighted (default)", "selection", "weighted"),
        PolicySpec("best", "ours: best", "selection", "best"),
        PolicySpec(
            "weighted-alone", "ours: weighted, replicas not sharing", "selection", shared=False
        ),
    ]
    for perm in itertools.permutations(NAMES):
        key = "fixed:" + ",".join(perm)
        out.append(PolicySpec(key, f"fixed {' > '.join(perm)}", "selection", "ordered", perm))
    out.append(PolicySpec("round-robin", "round robin", "round-robin"))
    return out


def make_rules(spec: PolicySpec) -> Rules:
    by = {u.name: u for u in UPSTREAMS}
    ups = tuple(
        Upstream(name=n, url=f"http://{n}.invalid", tier=by[n].tier, cost_per_gb=by[n].cost_per_gb)
        for n in spec.order
    )
    return Rules(
        upstreams=ups,
        pools=(Pool("main", spec.order, fallback="any-error"),),
        selection=Selection(mode=spec.mode, probe_interval=PROBE_INTERVAL),
    )


class Replica:
    """One gateway replica: its selection state (or a round-robin counter)."""

    def __init__(self, spec: PolicySpec, clock: Clock, seed: int) -> None:
        self.spec = spec
        self.state: SelectionState | None = None
        self._next = 0
        if spec.kind == "selection":
            rules = make_rules(spec)
            self.state = SelectionState(rules, clock=clock, rng=random.Random(seed))
            self.pool = list(rules.upstreams)

    def rank(self, module: str, zip_: bool) -> list[str]:
        if self.state is None:
            i = self._next
            self._next = (i + 1) % len(NAMES)
            return list(NAMES[i:] + NAMES[:i])
        return [s.candidate.name for s in self.state.order(self.pool, module, transfer=zip_)]

    def learn(self, attempts: Sequence[Attempt], module: str, zip_: bool, nbytes: int) -> None:
        if self.state is None:
            return
        for a in attempts:  # as app._observe: RTT from small answers, bandwidth from zips
            self.state.observe(a.upstream, failed=not a.ok, rtt=None if zip_ else a.ttfb)
        last = attempts[-1]
        if last.ok:
            self.state.served(last.upstream, module, nbytes)
            if zip_:
                self.state.transferred(last.upstream, nbytes, last.body)


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class Series:
    served: dict[str, list[int]]
    latency: list[float]
    pulls: list[int]
    failed: list[int]

    @classmethod
    def empty(cls, bins: int) -> Series:
        return cls({n: [0] * bins for n in NAMES}, [0.0] * bins, [0] * bins, [0] * bins)


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    cost: float = 0.0
    answers: int = 0
    hits: int = 0
    failed: int = 0
    served: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Result:
    key: str
    title: str
    pulls: int
    mean_ms: float
    p95_ms: float
    monthly_cost: float
    hit_pct: float
    failed: int
    share: dict[str, float]
    flips_per_hour: float  # changes of the upstream serving most, bin to bin, in steady time
    wall_s: float


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def set_cost(states: Sequence[SelectionState], name: str, value: float) -> None:
    for state in states:
        state.cost_overrides[name] = value


def simulate(spec: PolicySpec, trace: Trace, w: Workload, seed: int) -> tuple[Result, Series]:
    started = time.perf_counter()
    clock = Clock()
    replicas = [Replica(spec, clock, seed + 11 * i) for i in range(REPLICAS)]
    states = [r.state for r in replicas if r.state is not None]
    store = SharedStore(states, heat=spec.mode != "ordered") if spec.shared and states else None
    ups = {s.name: SimUpstream(s, w.modules, seed + 2) for s in UPSTREAMS}
    extra = random.Random(seed + 3)  # noise for fallback attempts and probes
    end = w.hours * HOUR
    series = Series.empty(math.ceil(end / BIN))
    tally = Tally()
    # (time, seq, callback): completions, probe ticks and store syncs, in time order
    agenda: list[tuple[float, int, Callable[[], None]]] = []
    seq = itertools.count()

    def at(t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(agenda, (t, next(seq), fn))

    def probe_tick() -> None:
        for state in states:
            for name, count in state.probes_due(PROBE_INTERVAL).items():
                for _ in range(count):
                    rtt = ups[name].probe(clock.now, extra.gauss(0, 1))
                    state.probed(name, ok=rtt is not None, rtt=rtt)
        at(clock.now + PROBE_TICK, probe_tick)

    def sync(kind: str, every: float) -> Callable[[], None]:
        def run() -> None:
            assert store is not None
            getattr(store, kind)(clock.now)
            at(clock.now + every, run)

        return run

    at(0.0, probe_tick)
    if store is not None:
        at(0.25, sync("flush", 0.25))
        at(1.0, sync("refresh", 1.0))
        if store.share_heat:
            at(5.0, sync("refresh_heat", 5.0))
    for c in SCENARIO:  # `goproxy-router cost set`: every replica has it within a second
        if c.kind == "cost" and store is not None:
            at(c.at, functools.partial(store.costs.__setitem__, c.upstream, c.value))
        elif c.kind == "cost" and states:
            at(c.at, functools.partial(set_cost, states, c.upstream, c.value))

    def price(name: str, now: float) -> float:
        changed = ups[name].change("cost", now)
        return changed.value if changed else ups[name].spec.cost_per_gb

    def fetch(
        replica: Replica, module: int, now: float, zip_: bool, z: float, zm: float
    ) -> tuple[list[Attempt], float]:
        """One request (the .info or the zip) walked over the ranked upstreams."""
        name = trace.names[module]
        nbytes = trace.sizes[module] if zip_ else SMALL_BYTES
        attempts: list[Attempt] = []
        elapsed = 0.0
        for k, up in enumerate(replica.rank(name, zip_)):
            if k:  # the first attempt's noise is common to all policies; fallbacks draw theirs
                z, zm = extra.gauss(0, 1), extra.gauss(0, 1)
            a = attempt(ups[up], module, nbytes, now + elapsed, z, zm)
            attempts.append(a)
            elapsed += a.seconds
            if a.ok:
                break
        done = now + elapsed
        at(done, lambda: replica.learn(attempts, name, zip_, nbytes))
        return attempts, elapsed

    stop = bisect.bisect_left(trace.times, end)
    for i in range(stop):
        now = trace.times[i]
        while agenda and agenda[0][0] <= now:
            t, _, fn = heapq.heappop(agenda)
            clock.now = t
            fn()
        clock.now = now
        replica = replicas[i % REPLICAS]
        module = trace.modules[i]
        z1, z2, z3, z4 = trace.noise[i]
        small, t_small = fetch(replica, module, now, False, z1, z2)
        ok = small[-1].ok
        big: list[Attempt] = []
        t_zip = 0.0
        if ok:
            big, t_zip = fetch(replica, module, now + t_small, True, z3, z4)
            ok = big[-1].ok
        b = int(now // BIN)
        series.pulls[b] += 1
        if not ok:
            series.failed[b] += 1
        else:
            series.served[big[-1].upstream][b] += 1
            series.latency[b] += t_small + t_zip
        if now < w.warmup:
            continue
        if not ok:
            tally.failed += 1
            continue
        tally.latencies.append(t_small + t_zip)
        for last, nbytes in ((small[-1], SMALL_BYTES), (big[-1], trace.sizes[module])):
            tally.cost += nbytes / 1e9 * price(last.upstream, now)
            tally.answers += 1
            tally.hits += last.hit
        tally.served[big[-1].upstream] += 1
    lat = sorted(tally.latencies)
    n = len(lat)
    hours = (end - w.warmup) / HOUR
    result = Result(
        key=spec.key,
        title=spec.title,
        pulls=n + tally.failed,
        mean_ms=round(1e3 * sum(lat) / max(1, n), 1),
        p95_ms=round(1e3 * percentile(lat, 95), 1),
        monthly_cost=round(tally.cost * MONTH_HOURS / hours, 0),
        hit_pct=round(100 * tally.hits / max(1, tally.answers), 1),
        failed=tally.failed,
        share={u: round(100 * tally.served[u] / max(1, n), 1) for u in NAMES},
        flips_per_hour=flips(series, w),
        wall_s=round(time.perf_counter() - started, 1),
    )
    return result, series


def steady_bins(w: Workload) -> list[int]:
    """Bins at least five minutes away from any change of the world."""
    edges = [c.at for c in SCENARIO] + [c.until for c in SCENARIO if c.until < w.hours * HOUR]
    out = []
    for b in range(int(w.warmup // BIN), int(w.hours * HOUR // BIN)):
        t = b * BIN
        if all(not (e - 5 * MINUTE <= t <= e + 5 * MINUTE) for e in edges):
            out.append(b)
    return out


def flips(series: Series, w: Workload) -> float:
    """How often, per steady hour, the upstream serving the most pulls changes from one
    minute to the next: herding replicas that chase each other show here."""
    bins = steady_bins(w)
    count = 0
    prev: str | None = None
    for b in bins:
        top = max(NAMES, key=lambda n: series.served[n][b])
        if prev is not None and top != prev and series.served[top][b] > 0:
            count += 1
        prev = top
    return round(count / max(1e-9, len(bins) * BIN / HOUR), 2)


def phase_stats(series: Series) -> dict[str, tuple[float, float]]:
    """Per labelled phase: mean pull latency (ms) and the regional mirror's share (%)."""
    out = {}
    for label, start, stop in PHASES:
        lo, hi = int(start // BIN), int(stop // BIN)
        served = sum(sum(series.served[n][lo:hi]) for n in NAMES)
        mean = 1e3 * sum(series.latency[lo:hi]) / max(1, served)
        share = 100 * sum(series.served["regional"][lo:hi]) / max(1, served)
        out[label] = (round(mean, 0), round(share, 0))
    return out


# --------------------------------------------------------------------------- output


def money(v: float) -> str:
    return f"${v:,.0f}"


def results_table(results: Sequence[Result]) -> str:
    head = "| policy | mean ms | P95 ms | cost / month | upstream cache hits | failed pulls | "
    head += " | ".join(f"{n} share" for n in NAMES) + " | top-upstream flips / h |"
    lines = [head, "|---|" + "---:|" * (6 + len(NAMES))]
    for r in results:
        shares = " | ".join(f"{r.share[n]:.0f} %" for n in NAMES)
        lines.append(
            f"| {r.title} | {r.mean_ms:,.0f} | {r.p95_ms:,.0f} | {money(r.monthly_cost)} | "
            f"{r.hit_pct:.1f} % | {r.failed} | {shares} | {r.flips_per_hour:g} |"
        )
    return "\n".join(lines)


def phase_table(phases: dict[str, dict[str, tuple[float, float]]], titles: dict[str, str]) -> str:
    labels = [p[0] for p in PHASES]
    lines = [
        "| policy | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for key, stats in phases.items():
        cells = [f"{stats[x][0]:,.0f} ms, {stats[x][1]:.0f} %" for x in labels]
        lines.append(f"| {titles[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(ours: Result, best_fixed: Result, pool_order: Result) -> str:
    def ratio(a: float, b: float) -> str:
        return f"x{b / a:.2f}" if a else "-"

    rows: list[tuple[str, str, Callable[[float], str]]] = [
        ("mean pull latency", "mean_ms", lambda v: f"{v:,.0f} ms"),
        ("bandwidth cost / month", "cost", money),
        ("cache-hit share", "hits", lambda v: f"{v:.0f} %"),
    ]
    attr = {"mean_ms": "mean_ms", "cost": "monthly_cost", "hits": "hit_pct"}
    lines = [
        "| metric | seed: static DNS -> smart | ratio | ours: best fixed order -> "
        "weighted | ratio | ours: pool order -> weighted | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, fmt in rows:
        a, b = SEED_CLAIMS[key]
        cells = [label, f"{fmt(a)} -> {fmt(b)}", ratio(a, b)]
        for base in (best_fixed, pool_order):
            x, y = getattr(base, attr[key]), getattr(ours, attr[key])
            cells += [f"{fmt(x)} -> {fmt(y)}", ratio(x, y)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(series: dict[str, Series], titles: dict[str, str], w: Workload, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return []
    first, last = int(w.warmup // BIN), int(w.hours * HOUR // BIN)
    x = [(b + 0.5) * BIN / HOUR for b in range(first, last)]
    colors = {"local": "tab:green", "regional": "tab:blue", "official": "tab:red"}

    def marks(ax: Any) -> None:
        for k, (label, start, _) in enumerate(PHASES[1:]):
            ax.axvline(start / HOUR, color="black", linewidth=0.6, linestyle=":")
            y = 1.0 + 0.06 * (k % 2)  # alternate heights: neighbouring labels do not overlap
            ax.text(start / HOUR, y, " " + label, transform=ax.get_xaxis_transform(), fontsize=7)

    share_keys = [k for k in ("weighted", "best", "weighted-alone") if k in series]
    fig, axes = plt.subplots(len(share_keys), 1, figsize=(12, 2.9 * len(share_keys)), sharex=True)
    for ax, key in zip(axes, share_keys, strict=True):
        s = series[key]
        totals = [max(1, sum(s.served[n][b] for n in NAMES)) for b in range(first, last)]
        shares = [
            [100 * s.served[n][b] / t for b, t in zip(range(first, last), totals, strict=True)]
            for n in NAMES
        ]
        ax.stackplot(x, *shares, labels=NAMES, colors=[colors[n] for n in NAMES])
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of pulls")
        ax.set_title(f"{titles[key]}: share of pulls per upstream, per minute", fontsize=9, pad=18)
        marks(ax)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1].set_xlabel("simulated hours")
    fig.tight_layout()
    share_png = out / "selection_share.png"
    fig.savefig(share_png, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(1, 1, figsize=(12, 4.2))
    smooth = 5  # bins
    for name, s in series.items():
        ys = []
        for b in range(first, last):
            lo = max(first, b - smooth + 1)
            served = sum(sum(s.served[n][lo : b + 1]) for n in NAMES)
            ys.append(1e3 * sum(s.latency[lo : b + 1]) / max(1, served))
        style = "-" if name in ("weighted", "best") else "--"
        ax.plot(x, ys, style, label=titles[name], linewidth=1.3 if style == "-" else 0.9)
    ax.set_yscale("log")
    ax.set_ylabel("mean pull latency, ms (log)")
    ax.set_xlabel("simulated hours")
    ax.set_title("mean pull latency, 5-minute moving window", fontsize=9, pad=18)
    marks(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    latency_png = out / "selection_latency.png"
    fig.savefig(latency_png, dpi=100)
    plt.close(fig)
    return [share_png, latency_png]


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--quick", action="store_true", help="a third of the traffic (smoke test)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--json", type=Path, default=BENCH_DIR / "out" / "selection_sim.json")
    args = p.parse_args(argv)
    started = time.perf_counter()
    w = Workload(rate=1.0, scan_modules=130) if args.quick else Workload()
    trace = make_trace(w, args.seed)
    print(
        f"trace: {len(trace.times):,} pulls over {w.hours:g} simulated hours "
        f"({w.warmup / HOUR:g} h warm-up not counted), {REPLICAS} replicas, seed {args.seed}",
        file=sys.stderr,
    )
    specs = policies()
    titles = {s.key: s.title for s in specs}
    results: dict[str, Result] = {}
    series: dict[str, Series] = {}
    for spec in specs:
        results[spec.key], series[spec.key] = simulate(spec, trace, w, args.seed)
        print(f"  {spec.key}: {results[spec.key].wall_s:.1f}s", file=sys.stderr)
    fixed = [r for k, r in results.items() if k.startswith("fixed:")]
    best_fixed = min(fixed, key=lambda r: r.mean_ms)
    pool_order = results["fixed:" + ",".join(NAMES)]
    ours = results["weighted"]

    print("## Whole run (after the warm-up)\n")
    print(results_table(list(results.values())))
    print(
        f"\nBest fixed order by latency: {best_fixed.title}. Ours (weighted) against it: "
        f"latency x{ours.mean_ms / best_fixed.mean_ms:.2f}, "
        f"cost x{ours.monthly_cost / best_fixed.monthly_cost:.2f}."
    )
    print("\n## Beside the seed's claims\n")
    print(seed_table(ours, best_fixed, pool_order))
    shown = ["weighted", "best", "weighted-alone", best_fixed.key, pool_order.key, "round-robin"]
    shown = list(dict.fromkeys(shown))
    print("\n## Over time: mean pull latency, the regional mirror's share\n")
    print(phase_table({k: phase_stats(series[k]) for k in shown}, titles))
    pngs = [] if args.no_plot else plot({k: series[k] for k in shown}, titles, w, BENCH_DIR)
    for png in pngs:
        print(f"\nplot: {png.relative_to(BENCH_DIR.parent)}")
    doc = {
        "seed": args.seed,
        "workload": asdict(w),
        "upstreams": [asdict(u) for u in UPSTREAMS],
        "scenario": [asdict(c) for c in SCENARIO],
        "replicas": REPLICAS,
        "results": [asdict(r) for r in results.values()],
        "phases": {k: phase_stats(series[k]) for k in results},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"json: {args.json} (total {doc['wall_seconds']}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
