"""Choosing among a pool's upstreams: measured speed, bandwidth cost and module heat.

Pure: every function takes the time (`now`, seconds) and any randomness as
arguments. For one request, each candidate gets three terms in [0, 1]:

    speed_i  = the RTT estimate (for a zip: RTT + 1 MiB / bandwidth estimate)
    excess_i = max(0, speed_i - fastest - band(fastest))     band(x) = max(10 ms, 25 % of x)
    rtt_i    = (fastest + R) / (fastest + excess_i + R)      R = 10 ms
    cost_i   = (min_cost + E) / (cost_i + E)                 E = 0.01 USD/GB
    heat_i   = heat_i / max_heat                             0 when no candidate has heat
    score_i  = w_rtt * rtt_i + w_cost * cost_i + w_heat * heat_i   (heat only if comparable)

*Comparable*: an upstream at most `band` slower than another (25 %, at least
10 ms) is as fast as it: its rtt term is 1.0 against the fastest, and noise
between nearby upstreams cannot reorder them. Heat counts only for
candidates comparable with the leader (the best by RTT and cost alone) or
faster than it, so stickiness never keeps a clearly slower upstream first.
An rtt term below SLOW_TERM (about 4x slower than the fastest, beyond the
band) is the slow guard: tried after the others, whatever it costs.

An unmeasured upstream (no RTT estimate) is not guessed: it ranks after the
measured ones, except that a share `explore` of requests try it first, so
it gets samples (the probe loop measures it on the side as well). With no
candidate measured at all, or while one is having its first probes (at
start, after a reload added it; at most a second), RTT is left out and the
pool's order, cost and heat decide ("cold").

Ejected upstreams are ranked after every healthy one (never dropped: when
all are ejected they are all still tried).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from router.core.model import Weights

__all__ = [
    "Candidate",
    "DecayedMedian",
    "EjectionPolicy",
    "Health",
    "HeatWindow",
    "Ranking",
    "Scored",
    "Weights",
    "comparable",
    "rank",
    "score",
]

COST_EPSILON = 0.01
RTT_EPSILON = 0.010
# Two speeds are comparable when the slower is at most this much slower: 25 %, or 10 ms.
COMPARABLE_RATIO = 0.25
COMPARABLE_FLOOR = 0.010
# An rtt term below this (about 4x slower than the fastest, beyond the band) means "slow":
# cost and heat may reorder comparable upstreams, never make a crawling one first.
SLOW_TERM = 0.25
# Share of requests that try an unmeasured upstream first, until it has a sample.
EXPLORE_SHARE = 0.10
# For zips: the transfer time of this many bytes is added to the RTT (bandwidth matters there).
TRANSFER_REFERENCE_BYTES = 1 << 20
# Samples an RTT or bandwidth estimate keeps.
WINDOW_SAMPLES = 16


def band(seconds: float) -> float:
    """How much slower than `seconds` still counts as just as fast."""
    return max(COMPARABLE_FLOOR, COMPARABLE_RATIO * seconds)


def comparable(slower: float, faster: float) -> bool:
    """True when `slower` is within the comparability band of `faster` (or faster)."""
    return slower <= faster + band(faster)


@dataclass(slots=True)
class DecayedMedian:
    """A robust, forgetting estimate: the weighted median of the last `size` samples,
    a sample `age` seconds older than the newest weighing exp(-age / tau).

    One outlier among recent samples does not move it (a module slow at every
    upstream does not make the one that served it look slow); a lasting change
    does, as soon as the new samples outweigh the old ones: a few samples on a
    busy upstream, one fresh probe after `tau` seconds of silence. Weights only
    depend on differences of sample times, so the value changes only on a sample
    (each sample's weight is fixed when it arrives, relative to an origin)."""

    tau: float = 10.0
    size: int = WINDOW_SAMPLES
    value: float | None = None
    stamp: float = 0.0
    _window: deque[tuple[float, float]] = field(default_factory=deque)  # (value, weight)
    _origin: float = 0.0

    @property
    def samples(self) -> int:
        return len(self._window)

    def observe(self, sample: float, now: float) -> None:
        tau = max(self.tau, 1e-9)
        if not self._window:
            self._origin = now
        elif (now - self._origin) / tau > 500:  # keep weights finite: move the origin
            shift = math.exp(-(now - self._origin) / tau)
            self._window = deque((v, w * shift) for v, w in self._window)
            self._origin = now
        self._window.append((sample, math.exp(max(0.0, now - self._origin) / tau)))
        while len(self._window) > self.size:
            self._window.popleft()
        self.stamp = now
        self.value = weighted_median(self._window)

    def reset(self) -> None:
        self._window.clear()
        self.value = None
        self.stamp = 0.0


def weighted_median(pairs: Iterable[tuple[float, float]]) -> float:
    """The value below which half the weight lies, of (value, weight) pairs."""
    ordered = sorted(pairs)
    half = sum(w for _, w in ordered) / 2
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= half:
            return value
    return ordered[-1][0]


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 5
    base: float = 30.0
    max: float = 300.0


@dataclass(slots=True)
class Health:
    """Outlier ejection with half-open probing (Envoy-style)."""

    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_success: float = 0.0

    def state(self, now: float) -> str:
        """healthy, ejected, or half-open (ejection over, no success since)."""
        if self.ejected_until > now:
            return "ejected"
        if self.ejections and self.last_success < self.ejected_until:
            return "half-open"
        return "healthy"

    def success(self, now: float, policy: EjectionPolicy) -> None:
        self.consecutive_failures = 0
        self.last_success = now
        if self.ejections and now - self.ejected_until > policy.max:
            self.ejections = 0  # healthy long enough: forget past ejections

    def failure(self, now: float, policy: EjectionPolicy) -> bool:
        """Count a failure; True when this failure ejects the upstream."""
        if self.state(now) == "ejected":
            return False
        self.consecutive_failures += 1
        half_open = self.state(now) == "half-open"
        if half_open or self.consecutive_failures >= policy.consecutive_failures:
            self.ejections += 1
            self.ejected_until = now + min(policy.base * self.ejections, policy.max)
            self.consecutive_failures = 0
            return True
        return False

    def eject_until(self, until: float) -> None:
        """Adopt an ejection another replica decided."""
        if until > self.ejected_until:
            self.ejected_until = until
            self.ejections = max(self.ejections, 1)


@dataclass(slots=True)
class HeatWindow:
    """How often each module was recently served by each upstream, in time buckets.

    `window` seconds split into `buckets`; a bucket's counts weigh 1 when fresh
    and fall linearly to 0 at the window's end. Each bucket keeps at most
    `top_n` modules per upstream (the most frequent), so memory is bounded
    however many modules pass."""

    window: float = 3600.0
    buckets: int = 12
    top_n: int = 512
    _data: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)

    @property
    def bucket_seconds(self) -> float:
        return self.window / self.buckets

    def bucket_of(self, now: float) -> int:
        return int(now // self.bucket_seconds)

    def add(self, upstream: str, module: str, now: float, n: float = 1.0) -> None:
        per = self._data.setdefault(upstream, {})
        bucket = self.bucket_of(now)
        counts = per.setdefault(bucket, {})
        counts[module] = counts.get(module, 0.0) + n
        if len(counts) > 2 * self.top_n:
            keep = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[: self.top_n]
            per[bucket] = dict(keep)
        oldest = bucket - self.buckets
        for stale in [b for b in per if b <= oldest]:
            del per[stale]

    def replace(self, upstream: str, bucket: int, counts: Mapping[str, float]) -> None:
        """Set one bucket's counts wholesale (from the shared store)."""
        self._data.setdefault(upstream, {})[bucket] = dict(counts)

    def weight(self, bucket: int, now: float) -> float:
        age = (self.bucket_of(now) - bucket) * self.bucket_seconds
        return max(0.0, 1.0 - age / self.window)

    def heat(self, upstream: str, module: str, now: float) -> float:
        per = self._data.get(upstream)
        if not per:
            return 0.0
        current = self.bucket_of(now)
        span = self.bucket_seconds / self.window
        total = 0.0
        for bucket, counts in per.items():
            n = counts.get(module)
            if n:
                total += n * max(0.0, 1.0 - (current - bucket) * span)
        return total

    def top(self, upstream: str, now: float, n: int = 10) -> list[tuple[str, float]]:
        totals: dict[str, float] = {}
        for bucket, counts in self._data.get(upstream, {}).items():
            w = self.weight(bucket, now)
            for module, c in counts.items():
                totals[module] = totals.get(module, 0.0) + c * w
        return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:n]

    def size(self) -> int:
        return sum(len(c) for per in self._data.values() for c in per.values())


@dataclass(frozen=True, slots=True)
class Candidate:
    """What scoring knows of one upstream for one request."""

    name: str
    rtt: float | None  # seconds; None: unmeasured
    cost: float
    heat: float
    health: str = "healthy"
    tier: str = "L1"
    samples: int = 0  # RTT samples behind `rtt` (0 when it comes from another replica)
    bandwidth: float | None = None  # bytes per second, learnt from zips
    failures: int = 0  # consecutive failures: an upstream failing now is not explored
    pending: bool = False  # unmeasured, its first probes under way: RTT waits for them


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    rtt_term: float
    cost_term: float
    heat_term: float
    score: float
    measured: bool = True
    heat_counts: bool = True  # comparable with the leader: heat may reorder it
    slow: bool = False  # the slow guard: far slower than the fastest

    heat_part: float = 0.0  # what heat added to the score

    @property
    def base(self) -> float:
        """The score without its heat part: RTT and cost alone."""
        return self.score - self.heat_part

    def as_dict(self) -> dict[str, object]:
        c = self.candidate
        return {
            "upstream": c.name,
            "score": round(self.score, 4),
            "components": {
                "rtt": round(self.rtt_term, 4),
                "cost": round(self.cost_term, 4),
                "heat": round(self.heat_term, 4),
            },
            "rtt_seconds": None if c.rtt is None else round(c.rtt, 4),
            "rtt_samples": c.samples,
            "bandwidth_bytes_per_second": None if c.bandwidth is None else round(c.bandwidth),
            "measured": self.measured,
            "heat_counts": self.heat_counts,
            "slow": self.slow,
            "cost_per_gb": c.cost,
            "heat": round(c.heat, 3),
            "health": c.health,
            "tier": c.tier,
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    """The order to try candidates in, and why the first one is first.

    Reasons: `ordered` (the pool's order), `cold` (nothing measured: cost, heat
    and the pool's order), `explore` (an unmeasured upstream tried for samples),
    `exploit` (the best score), `heat` (heat lifted a comparable upstream over the
    leader), `slow-guard` (a better score was demoted for being far slower),
    `spread` (weighted mode drew another of the near-best)."""

    order: list[Scored]
    reason: str

    @property
    def names(self) -> list[str]:
        return [s.candidate.name for s in self.order]


def speed(c: Candidate, transfer: bool, best_bandwidth: float | None) -> float | None:
    """Seconds this candidate is expected to take: its RTT, plus for a transfer (zip) the
    time of TRANSFER_REFERENCE_BYTES at its bandwidth (an upstream whose bandwidth is not
    known yet is given the best known one, so zips reach it and measure it)."""
    if c.rtt is None or c.rtt < 0:
        return None
    if not transfer:
        return c.rtt
    bw = c.bandwidth or best_bandwidth
    return c.rtt + (TRANSFER_REFERENCE_BYTES / bw if bw else 0.0)


def is_cold(candidates: Iterable[Candidate]) -> bool:
    """RTT is left out of a ranking while no candidate is measured, and while one is
    still having its first probes (so the first answers to come back do not decide)."""
    cands = list(candidates)
    return all(c.rtt is None for c in cands) or any(c.pending for c in cands)


def rtt_term(seconds: float, fastest: float) -> float:
    """1.0 within the comparability band of the fastest, falling beyond it."""
    excess = max(0.0, seconds - fastest - band(fastest))
    return (fastest + RTT_EPSILON) / (fastest + excess + RTT_EPSILON)


def score(
    candidates: Sequence[Candidate], weights: Weights, *, transfer: bool = False
) -> list[Scored]:
    """Every candidate's normalised components and weighted score, in input order."""
    bws = [c.bandwidth for c in candidates if c.bandwidth]
    best_bw = max(bws) if bws else None
    speeds = [speed(c, transfer, best_bw) for c in candidates]
    live = [s for c, s in zip(candidates, speeds, strict=True) if s is not None]
    usable = [
        s
        for c, s in zip(candidates, speeds, strict=True)
        if s is not None and c.health != "ejected"
    ]
    fastest = min(usable or live) if live and not is_cold(candidates) else None
    min_cost = min((c.cost for c in candidates), default=0.0)
    max_heat = max((c.heat for c in candidates), default=0.0)
    rows = []
    for c, s in zip(candidates, speeds, strict=True):
        # cold (nothing measured): RTT is left out; unmeasured among measured: no credit
        r = 1.0 if fastest is None else rtt_term(s, fastest) if s is not None else 0.0
        cost_term = (min_cost + COST_EPSILON) / (c.cost + COST_EPSILON)
        heat_term = c.heat / max_heat if max_heat > 0 else 0.0
        rows.append((c, s, r, cost_term, heat_term, weights.rtt * r + weights.cost * cost_term))
    leader_speed: float | None = None
    if fastest is not None:
        fit = [
            (base, s)
            for c, s, r, _, _, base in rows
            if s is not None and c.health != "ejected" and r >= SLOW_TERM
        ]
        leader_speed = max(fit, key=lambda bs: bs[0])[1] if fit else fastest
    out = []
    for c, s, r, cost_term, heat_term, base in rows:
        measured = s is not None
        counts = leader_speed is None or (s is not None and comparable(s, leader_speed))
        heat_part = weights.heat * heat_term if counts else 0.0
        slow = s is not None and r < SLOW_TERM
        out.append(
            Scored(c, r, cost_term, heat_term, base + heat_part, measured, counts, slow, heat_part)
        )
    return out


def _health_rank(health: str) -> int:
    return 0 if health == "healthy" else 2 if health == "half-open" else 3


def rank(
    scored: Sequence[Scored],
    *,
    mode: str,
    rng: random.Random,
    near_best: float = 0.9,
    fresh_tiers: Iterable[str] = (),
    explore: float = EXPLORE_SHARE,
) -> Ranking:
    """The order to try candidates in.

    `ordered`: the pool's own order. `best`: by score. `weighted`: the first is
    drawn among the near-best (score >= near_best x the best) with probability
    proportional to score, so replicas do not all herd onto one upstream; the rest
    follow by score. In both, a share `explore` of requests (one rng draw, only when
    there is an unmeasured, healthy, not failing candidate) tries an unmeasured one
    first. Standing, best first: healthy and measured; healthy, unmeasured; slow or
    half-open; ejected. With `fresh_tiers`, those tiers before all of that."""
    fresh = set(fresh_tiers)

    def tier_group(s: Scored) -> int:
        return 0 if not fresh or s.candidate.tier in fresh else 1

    if mode == "ordered":  # pool order, healthy first (stable sort)
        order = sorted(scored, key=lambda s: (tier_group(s), _health_rank(s.candidate.health)))
        return Ranking(order, "ordered")
    cold = is_cold(s.candidate for s in scored)

    def group(s: Scored) -> tuple[int, int]:
        standing = _health_rank(s.candidate.health)
        if standing == 0 and not cold:
            standing = 2 if s.slow else 0 if s.measured else 1
        return (tier_group(s), standing)

    order = sorted(scored, key=lambda s: (group(s), -s.score))
    if not order:
        return Ranking(order, "cold")
    head = order[0]
    if not cold:
        explorable = [
            s
            for s in order
            if tier_group(s) == tier_group(head)
            and not s.measured
            and s.candidate.health == "healthy"
            and s.candidate.failures == 0
        ]
        if explorable and explore > 0:
            u = rng.random()
            if u < explore:
                pick = explorable[min(len(explorable) - 1, int(u / explore * len(explorable)))]
                return Ranking([pick, *(s for s in order if s is not pick)], "explore")
    reason = "cold" if cold else "exploit"
    peers = [s for s in order if group(s) == group(head)]
    if mode == "weighted" and len(peers) > 1:
        near = [s for s in peers if s.score >= near_best * head.score]
        if len(near) > 1:
            first = rng.choices(near, weights=[max(s.score, 1e-9) for s in near])[0]
            if first is not head:
                return Ranking([first, *(s for s in order if s is not first)], "spread")
    if not cold:
        best_base = max(s.base for s in peers)
        in_peers = {id(s) for s in peers}  # the leader: best without heat, pool order on ties
        leader = next(s for s in scored if id(s) in in_peers and s.base == best_base)
        if leader is not head and head.heat_part > 0:
            reason = "heat"
        demoted = [s for s in scored if s.slow and s.candidate.health == "healthy"]
        if any(s.score > head.score and tier_group(s) == tier_group(head) for s in demoted):
            reason = "slow-guard"
    return Ranking(order, reason)
