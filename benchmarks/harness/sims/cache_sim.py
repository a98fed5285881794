"""Replay cache traces through the gateway's cache policy and a few baselines.

Usage:
    python -m benchmarks.harness.sims.cache_sim --trace FILE --capacity N [--json]
    python -m benchmarks.harness.sims.cache_sim --synthetic zipf --alpha A --objects N --requests M
        [--scan-share S] --capacity-share P --seed X [--json]
    python -m benchmarks.harness.sims.cache_sim --synthetic goproxy --requests M --capacity-share P
        --seed X [--json]
    python -m benchmarks.harness.sims.cache_sim --table [--out FILE]
    python -m benchmarks.harness.sims.cache_sim --sweep decay|crp|k [--out FILE]

A trace is one integer key per line, every key of size 1 (a ``.gz`` file is
read through gzip; the anchor traces are ``tests/data/traces/NAME.txt.gz``). Time is simulated:
request i happens at ``now = i * --step`` seconds (default 0.01 s, i.e. a
gateway serving 100 metadata requests a second), so the policy's per-second
decay and correlated reference period have a meaning. Hit ratio = hits /
requests, cold misses included. ``--json`` prints ``{"policy": ratio}`` with
ratios as fractions; "router" is :class:`router.cache.policy.LRUKPolicy` with
its defaults and "lru" is plain LRU. See benchmarks/CACHE.md.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from router.cache.policy import LRUKPolicy, LRUPolicy  # noqa: E402

TRACES = ROOT / "tests" / "data" / "traces"  # provenance: tests/data/README.md
STEP = 0.01
SCAN_RUNS_PER_REQUESTS = 50  # a scan run is requests / 50 keys long (20,000 of 1M)


class Sim(Protocol):
    """What the replay loop needs (the router's CachePolicy satisfies it)."""

    def access(self, key: Hashable, size: int, now: float) -> bool: ...
    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]: ...


# -- baselines that live only in the benchmark --------------------------------


class _LazyHeap:
    """Min-heap of keys whose priority only grows; one live entry per key."""

    def __init__(self) -> None:
        self.prio: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()

    def push(self, key: Hashable, prio: float) -> None:
        self.prio[key] = prio
        heapq.heappush(self._heap, (prio, next(self._seq), key))

    def pop_min(self) -> Hashable:
        heap = self._heap
        while True:
            prio, _, key = heap[0]
            current = self.prio.get(key)
            if current is None:
                heapq.heappop(heap)
            elif current != prio:
                heapq.heapreplace(heap, (current, next(self._seq), key))
            else:
                heapq.heappop(heap)
                del self.prio[key]
                return key


class _ByteBudget:
    """Resident sizes plus the eviction loop shared by the heap baselines."""

    def __init__(self, capacity_bytes: int, max_entries: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self.sizes: dict[Hashable, int] = {}
        self.used = 0
        self.heap = _LazyHeap()

    def insert(self, key: Hashable, size: int, prio: float) -> list[Hashable]:
        if size > self.capacity_bytes:
            return [key]
        self.sizes[key] = size
        self.used += size
        self.heap.push(key, prio)
        out: list[Hashable] = []
        while self.used > self.capacity_bytes or len(self.sizes) > self.max_entries:
            victim = self.heap.pop_min()
            self.used -= self.sizes.pop(victim)
            out.append(victim)
        return out


class NaiveLRU2:
    """LRU-2 as most libraries ship it: no retained history, no correlated period."""

    def __init__(self, capacity_bytes: int, max_entries: int) -> None:
        self._budget = _ByteBudget(capacity_bytes, max_entries)
        self._hist: dict[Hashable, tuple[float, float]] = {}

    @staticmethod
    def _prio(last: float, prev: float) -> float:
        return prev if prev > -math.inf else last - 1e15

    def access(self, key: Hashable, size: int, now: float) -> bool:
        hist = self._hist.get(key)
        if hist is None:
            return False
        self._hist[key] = (now, hist[0])
        self._budget.heap.prio[key] = self._prio(now, hist[0])
        return True

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        self._hist[key] = (now, -math.inf)
        out = self._budget.insert(key, size, self._prio(now, -math.inf))
        for victim in out:
            del self._hist[victim]
        return out


class SeedDecay:
    """The seed's sketch, made exact: evict the lowest count x decay^(seconds idle).

    The seed sweeps every 10 s; this evicts on demand (kinder to it). The
    weight order is time-invariant: log(count) + rate * last_access.
    """

    def __init__(self, capacity_bytes: int, max_entries: int, decay: float = 0.97) -> None:
        self._budget = _ByteBudget(capacity_bytes, max_entries)
        self._rate = -math.log(decay)
        self._count: dict[Hashable, int] = {}

    def access(self, key: Hashable, size: int, now: float) -> bool:
        count = self._count.get(key)
        if count is None:
            return False
        self._count[key] = count + 1
        self._budget.heap.prio[key] = math.log(count + 1) + self._rate * now
        return True

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        self._count[key] = 1
        out = self._budget.insert(key, size, self._rate * now)
        for victim in out:
            del self._count[victim]
        return out


class ARC:
    """Adaptive Replacement Cache (Megiddo & Modha 2003), unit-size entries."""

    def __init__(self, capacity: int) -> None:
        self.c = capacity
        self.p = 0.0
        self.t1: OrderedDict[Hashable, None] = OrderedDict()
        self.t2: OrderedDict[Hashable, None] = OrderedDict()
        self.b1: OrderedDict[Hashable, None] = OrderedDict()
        self.b2: OrderedDict[Hashable, None] = OrderedDict()

    def access(self, key: Hashable, size: int, now: float) -> bool:
        if key in self.t1:
            del self.t1[key]
            self.t2[key] = None
            return True
        if key in self.t2:
            self.t2.move_to_end(key)
            return True
        return False

    def _replace(self, in_b2: bool) -> None:
        if self.t1 and (len(self.t1) > self.p or (in_b2 and len(self.t1) == self.p)):
            self.b1[self.t1.popitem(last=False)[0]] = None
        elif self.t2:
            self.b2[self.t2.popitem(last=False)[0]] = None

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        if key in self.b1:
            self.p = min(self.c, self.p + max(len(self.b2) / len(self.b1), 1.0))
            self._replace(False)
            del self.b1[key]
            self.t2[key] = None
        elif key in self.b2:
            self.p = max(0.0, self.p - max(len(self.b1) / len(self.b2), 1.0))
            self._replace(True)
            del self.b2[key]
            self.t2[key] = None
        else:
            self._admit_new(key)
        return []

    def _admit_new(self, key: Hashable) -> None:
        l1 = len(self.t1) + len(self.b1)
        total = l1 + len(self.t2) + len(self.b2)
        if l1 >= self.c:
            if len(self.t1) < self.c:
                self.b1.popitem(last=False)
                self._replace(False)
            else:
                self.t1.popitem(last=False)
        elif total >= self.c:
            if total >= 2 * self.c:
                self.b2.popitem(last=False)
            self._replace(False)
        self.t1[key] = None


class TwoQ:
    """Full 2Q (Johnson & Shasha 1994): A1in 25 %, A1out ghosts 50 %, unit size."""

    def __init__(self, capacity: int) -> None:
        self.c = capacity
        self.kin = max(1, capacity // 4)
        self.kout = max(1, capacity // 2)
        self.am: OrderedDict[Hashable, None] = OrderedDict()
        self.a1in: OrderedDict[Hashable, None] = OrderedDict()
        self.a1out: OrderedDict[Hashable, None] = OrderedDict()

    def access(self, key: Hashable, size: int, now: float) -> bool:
        if key in self.am:
            self.am.move_to_end(key)
            return True
        return key in self.a1in

    def _reclaim(self) -> None:
        if len(self.am) + len(self.a1in) < self.c:
            return
        if len(self.a1in) > self.kin or not self.am:
            self.a1out[self.a1in.popitem(last=False)[0]] = None
            if len(self.a1out) > self.kout:
                self.a1out.popitem(last=False)
        else:
            self.am.popitem(last=False)

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        self._reclaim()
        if key in self.a1out:
            del self.a1out[key]
            self.am[key] = None
        else:
            self.a1in[key] = None
        return []


# -- replay -------------------------------------------------------------------


@dataclass
class Workload:
    """Keys in request order, optional sizes (default 1), and the two budgets."""

    name: str
    keys: Sequence[int]
    capacity_bytes: int
    max_entries: int
    sizes: dict[int, int] | None = None
    unit: bool = field(init=False)

    def __post_init__(self) -> None:
        self.unit = self.sizes is None


Factory = Callable[[Workload], Sim]


def router_factory(**params: float) -> Factory:
    """LRUKPolicy with its defaults, optionally overridden (for sweeps).

    ``history`` is given as a multiple of the workload's max_entries.
    """

    overrides: dict[str, Any] = {n: int(v) if n == "k" else v for n, v in params.items()}
    factor = overrides.pop("history", None)  # swept as a multiple of max_entries

    def make(w: Workload) -> Sim:
        if factor is not None:
            overrides["history"] = int(factor * w.max_entries)
        return LRUKPolicy(w.capacity_bytes, w.max_entries, **overrides)

    return make


POLICIES: dict[str, tuple[Factory, bool]] = {
    # name: (factory, handles variable sizes)
    "router": (router_factory(), True),
    "lru": (lambda w: LRUPolicy(w.capacity_bytes, w.max_entries), True),
    "lru-2 naive": (lambda w: NaiveLRU2(w.capacity_bytes, w.max_entries), True),
    "seed 0.97": (lambda w: SeedDecay(w.capacity_bytes, w.max_entries), True),
    "2q": (lambda w: TwoQ(w.max_entries), False),
    "arc": (lambda w: ARC(w.max_entries), False),
}


def replay(policy: Sim, w: Workload, step: float = STEP) -> float:
    """Hit ratio of ``policy`` over the workload; request i happens at i * step."""
    access, admit = policy.access, policy.admit
    hits = 0
    sizes = w.sizes
    for i, key in enumerate(w.keys):
        size = 1 if sizes is None else sizes[key]
        now = i * step
        if access(key, size, now):
            hits += 1
        else:
            admit(key, size, now)
    return hits / len(w.keys) if w.keys else 0.0


def run_all(
    w: Workload, names: Iterable[str] | None = None, step: float = STEP
) -> dict[str, float]:
    """Hit ratio of every selected policy that supports the workload."""
    out: dict[str, float] = {}
    for name in names or POLICIES:
        factory, sized = POLICIES[name]
        if sized or w.unit:
            out[name] = replay(factory(w), w, step)
    return out


# -- workloads ----------------------------------------------------------------


def load_trace(path: Path) -> list[int]:
    """One integer key per line; a ``.gz`` file is decompressed on the fly."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="ascii") as fh:
        return [int(line) for line in fh if line.strip()]


def trace_workload(path: Path, capacity: int) -> Workload:
    """A unit-size trace with ``capacity`` entries (= bytes)."""
    name = Path(path.name.removesuffix(".gz")).stem
    return Workload(name, load_trace(path), capacity, capacity)


def zipf_keys(
    alpha: float, objects: int, requests: int, seed: int, scan_share: float = 0.0
) -> list[int]:
    """Zipf(alpha) requests over ``objects`` keys, with optional one-time scans.

    Scans are runs of requests / SCAN_RUNS_PER_REQUESTS never-seen keys (ids >= objects),
    spread evenly, making up ``scan_share`` of the requests.
    """
    rng = random.Random(seed)
    weights = itertools.accumulate(1.0 / (i**alpha) for i in range(1, objects + 1))
    rank_to_key = list(range(objects))
    rng.shuffle(rank_to_key)
    length = max(1, requests // SCAN_RUNS_PER_REQUESTS)
    scans = round(scan_share * requests / length)
    draws = rng.choices(rank_to_key, cum_weights=list(weights), k=requests - scans * length)
    if not scans:
        return draws
    out: list[int] = []
    chunk = len(draws) // scans
    for s in range(scans):
        part = draws[s * chunk : (s + 1) * chunk]
        start = objects + s * length
        out += part[: chunk // 2] + list(range(start, start + length)) + part[chunk // 2 :]
    return out + draws[scans * chunk :]


def zipf_workload(
    alpha: float, objects: int, requests: int, seed: int, share: float, scan_share: float = 0.0
) -> Workload:
    """Synthetic Zipf row; capacity = share x objects entries."""
    cap = int(share * objects)
    name = f"zipf {alpha}" + (f" + {scan_share:.0%} scans" if scan_share else "")
    return Workload(name, zipf_keys(alpha, objects, requests, seed, scan_share), cap, cap)


# GOPROXY metadata workload: see CACHE.md, "The GOPROXY workload".
GP_MODULES = 20_000
GP_ALPHA = 0.9
GP_SCAN_SHARE = 0.25


def _gp_sizes(rng: random.Random, versions: int) -> tuple[int, int, int]:
    """Byte sizes of a module's @v/list, one .info and one .mod."""
    listing = 8 + 12 * versions
    info = rng.randint(60, 200)
    mod = min(65_536, max(40, int(rng.lognormvariate(math.log(600), 1.0))))
    return listing, info, mod


class _GoproxyGen:
    """Generates (key, size) requests of a GOPROXY gateway's metadata cache."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.versions = [1 + min(40, int(self.rng.expovariate(1 / 6))) for _ in range(GP_MODULES)]
        ranks = list(range(GP_MODULES))
        self.rng.shuffle(ranks)
        self.by_rank = ranks
        self.cum = list(itertools.accumulate(1.0 / r**GP_ALPHA for r in range(1, GP_MODULES + 1)))
        self.sizes: dict[int, int] = {}

    def _key(self, module: int, version: int, kind: int) -> int:
        """kind 0 = list, 1 = info, 2 = mod; versions are per module."""
        key = (module * 64 + version) * 3 + kind
        if key not in self.sizes:
            listing, info, mod = _gp_sizes(self.rng, self.versions[module])
            self.sizes[key] = (listing, info, mod)[kind]
        return key

    def fetch(self, module: int, latest_bias: float) -> list[int]:
        """One `go mod download`-like fetch: maybe the list, then .info and .mod."""
        rng, nver = self.rng, self.versions[module]
        version = nver - 1 if rng.random() < latest_bias else rng.randrange(nver)
        keys = [self._key(module, 0, 0)] if rng.random() < 0.4 else []
        return [*keys, self._key(module, version, 1), self._key(module, version, 2)]

    def popular(self) -> list[int]:
        """A developer or cached CI fetch: Zipf module, usually its latest version."""
        rank = self.rng.choices(range(GP_MODULES), cum_weights=self.cum)[0]
        keys = self.fetch(self.by_rank[rank], 0.7)
        if self.rng.random() < 0.1:  # parallel jobs asking for the same thing
            keys = keys * self.rng.randint(2, 4)
        return keys

    def scan(self) -> list[int]:
        """A CI job downloading a whole, uncached dependency tree once."""
        out: list[int] = []
        for _ in range(self.rng.randint(100, 1000)):
            out += self.fetch(self.rng.randrange(GP_MODULES), 0.2)
        return out


def goproxy_workload(requests: int, seed: int, share: float) -> Workload:
    """Zipf module popularity plus one-off CI scans; byte budget = share x unique bytes."""
    gen = _GoproxyGen(seed)
    keys: list[int] = []
    scanned = 0
    while len(keys) < requests:
        if scanned < GP_SCAN_SHARE * len(keys):
            part = gen.scan()
            scanned += len(part)
        else:
            part = gen.popular()
        keys += part
    keys = keys[:requests]
    unique = set(keys)
    total = sum(gen.sizes[k] for k in unique)
    name = f"goproxy {share:.0%} of bytes"
    return Workload(name, keys, int(share * total), len(unique), sizes=gen.sizes)


# -- the anchor table -----------------------------------------------------------

POLICY_COLUMNS = ["LRU", "LRU-2", "2Q", "ARC", "LIRS", "W-TinyLFU", "S3-FIFO"]
TRACE_ROWS: list[tuple[str, float, list[float]]] = [
    ("gli", 0.25, [1.1, 1.4, 16.8, 1.4, 41.2, 40.8, 37.6]),
    ("loop", 0.50, [0.0, 0.0, 0.0, 0.0, 49.4, 49.3, 44.9]),
    ("multi3", 0.10, [35.5, 37.3, 43.2, 39.0, 48.5, 46.8, 47.7]),
    ("ps", 0.05, [12.2, 16.8, 12.2, 16.8, 28.7, 36.2, 28.9]),
    ("sprite", 0.10, [86.5, 44.9, 85.7, 85.5, 84.0, 75.2, 86.0]),
    ("web07", 0.10, [55.7, 51.5, 57.0, 58.1, 57.4, 55.9, 58.2]),
    ("web12", 0.10, [68.5, 61.7, 71.5, 70.9, 70.2, 70.5, 72.1]),
]
ZIPF_ROWS: list[tuple[float, float, float, list[float]]] = [
    # alpha, capacity share, scan share, published
    (0.8, 0.01, 0.0, [20.3, 29.9, 29.7, 30.9, 31.0, 31.8, 31.5]),
    (0.8, 0.10, 0.0, [46.7, 53.7, 52.5, 53.5, 53.5, 55.0, 54.6]),
    (1.0, 0.01, 0.0, [50.5, 59.1, 58.1, 59.4, 59.4, 60.3, 59.8]),
    (1.0, 0.10, 0.0, [73.5, 77.5, 76.5, 77.4, 77.4, 78.0, 77.9]),
    (0.9, 0.05, 0.2, [40.4, 47.0, 46.2, 47.3, 47.3, 47.7, 47.7]),
]
EXTRA_TRACES = [("2_pools", 0.10)]
GOPROXY_SHARES = [0.02, 0.10]
ZIPF_OBJECTS, ZIPF_REQUESTS, ZIPF_SEED = 100_000, 1_000_000, 1


@dataclass
class Row:
    """One measured row: label, our ratios (percent), published ratios (percent)."""

    label: str
    ours: dict[str, float]
    published: list[float] | None

    @property
    def best(self) -> tuple[str, float] | None:
        if not self.published:
            return None
        value = max(self.published)
        return POLICY_COLUMNS[self.published.index(value)], value

    def verdict(self) -> str:
        router, lru = self.ours["router"], self.ours["lru"]
        notes = [] if router >= lru else [f"below LRU by {lru - router:.2f}"]
        best = self.best
        if best and router < best[1] - 3.0:
            notes.append(f"{best[1] - router:.1f} under best")
        return "ok" if not notes else "MISS: " + ", ".join(notes)


def trace_rows(names: Iterable[str] | None = None) -> Iterable[tuple[Workload, list[float] | None]]:
    """Anchor trace rows (capacity = share x unique keys), then the extra traces."""
    rows = [(n, s, p) for n, s, p in TRACE_ROWS] + [(n, s, None) for n, s in EXTRA_TRACES]
    for name, share, published in rows:
        keys = load_trace(TRACES / f"{name}.txt.gz")
        cap = int(share * len(set(keys)))
        yield Workload(f"{name} {share:.0%} ({cap})", keys, cap, cap), published


def zipf_rows() -> Iterable[tuple[Workload, list[float] | None]]:
    """The synthetic anchor rows."""
    for alpha, share, scans, published in ZIPF_ROWS:
        w = zipf_workload(alpha, ZIPF_OBJECTS, ZIPF_REQUESTS, ZIPF_SEED, share, scans)
        w.name = f"{w.name} / {share:.0%}"
        yield w, published


def goproxy_rows() -> Iterable[tuple[Workload, list[float] | None]]:
    """Our GOPROXY workload at two byte budgets (no published figures)."""
    for share in GOPROXY_SHARES:
        yield goproxy_workload(ZIPF_REQUESTS, ZIPF_SEED, share), None


def measure(rows: Iterable[tuple[Workload, list[float] | None]], step: float) -> list[Row]:
    """Run every policy over every row, logging progress to stderr."""
    out = []
    for w, published in rows:
        t0 = time.perf_counter()
        ratios = {k: 100 * v for k, v in run_all(w, step=step).items()}
        print(f"  {w.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        out.append(Row(w.name, ratios, published))
    return out


def render(rows: list[Row]) -> str:
    """Markdown: ours and baselines we ran, published best, verdict."""
    names = list(POLICIES)
    head = ["row", *names, "published best", "router - best", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label] + [f"{r.ours[n]:.1f}" if n in r.ours else "-" for n in names]
        best = r.best
        cells.append(f"{best[1]:.1f} ({best[0]})" if best else "-")
        cells.append(f"{r.ours['router'] - best[1]:+.1f}" if best else "-")
        cells.append(r.verdict())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- sweeps -------------------------------------------------------------------

SWEEPS: dict[str, list[float]] = {
    "decay": [0.9, 0.97, 0.99, 0.995, 0.999, 0.9999, 1.0],
    "crp": [0.0, 0.1, 0.3, 1.0, 3.0],
    "k": [1, 2, 3],
    "history": [0, 0.5, 1, 2, 4, 8],  # x max_entries
}


def sweep(param: str, step: float) -> str:
    """Router hit ratio per anchor row for each value of one parameter."""
    values = SWEEPS[param]
    rows = [*trace_rows(), *zipf_rows(), *goproxy_rows()]
    lines = [
        "| row | " + " | ".join(f"{param}={v:g}" for v in values) + " |",
        "|" + "---|" * (len(values) + 1),
    ]
    for w, _ in rows:
        cells = [f"{100 * replay(router_factory(**{param: v})(w), w, step):.1f}" for v in values]
        lines.append(f"| {w.name} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--trace", type=Path, help="trace file, one integer key per line")
    mode.add_argument("--synthetic", choices=["zipf", "goproxy"])
    mode.add_argument("--table", action="store_true", help="every anchor row, markdown")
    mode.add_argument("--sweep", choices=sorted(SWEEPS), help="router parameter sweep")
    p.add_argument("--capacity", type=int, help="cache entries for --trace")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--objects", type=int, default=ZIPF_OBJECTS)
    p.add_argument("--requests", type=int, default=ZIPF_REQUESTS)
    p.add_argument("--scan-share", type=float, default=0.0)
    p.add_argument("--capacity-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=ZIPF_SEED)
    p.add_argument("--step", type=float, default=STEP, help="simulated seconds per request")
    p.add_argument("--json", action="store_true", help='print {"policy": hit ratio}')
    p.add_argument("--out", type=Path, help="also write the table/sweep here")
    return p


def _single(args: argparse.Namespace) -> Workload:
    if args.trace:
        if args.capacity is None:
            raise SystemExit("--trace needs --capacity")
        return trace_workload(args.trace, args.capacity)
    if args.synthetic == "goproxy":
        return goproxy_workload(args.requests, args.seed, args.capacity_share)
    return zipf_workload(
        args.alpha, args.objects, args.requests, args.seed, args.capacity_share, args.scan_share
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    args = _parser().parse_args(argv)
    if args.table or args.sweep:
        t0 = time.perf_counter()
        if args.sweep:
            text = sweep(args.sweep, args.step)
        else:
            text = render(measure([*trace_rows(), *zipf_rows(), *goproxy_rows()], args.step))
        print(text)
        print(f"\n({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if args.out:
            args.out.write_text(text + "\n")
        return 0
    ratios = run_all(_single(args), step=args.step)
    if args.json:
        print(json.dumps(ratios))
    else:
        for name, ratio in ratios.items():
            print(f"{name:12s} {100 * ratio:6.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
