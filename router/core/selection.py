"""Choosing among a pool's upstreams: live RTT, bandwidth cost and module heat.

Pure: every function takes the time (`now`, seconds) and any randomness as
arguments. The score of candidate i, each term normalised across the
candidates of one request to [0, 1]:

    rtt_i  = (min_rtt + R) / (rtt_i + R)           (unmeasured: the median of the measured)
    cost_i = (min_cost + E) / (cost_i + E)         (E = 0.01 USD/GB keeps free upstreams finite)

R = 10 ms keeps sub-millisecond jitter between nearby upstreams from looking
like a 2x difference (0.5 ms vs 1 ms is no reason to herd onto one of them).
    heat_i = heat_i / max_heat                     (0 when no candidate has heat)
    score_i = w_rtt * rtt_i + w_cost * cost_i + w_heat * heat_i

Ejected upstreams are ranked after every healthy one (never dropped: when
all are ejected they are all still tried).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from router.core.model import Weights

__all__ = [
    "Candidate",
    "EjectionPolicy",
    "Health",
    "HeatWindow",
    "PeakEwma",
    "Scored",
    "Weights",
    "rank",
    "score",
]

COST_EPSILON = 0.01
RTT_EPSILON = 0.010
# An rtt term below this (slower than ~4x the best, beyond the 10 ms floor) means "slow":
# cost and heat may reorder comparable upstreams, never make a crawling one first.
SLOW_TERM = 0.25


@dataclass(slots=True)
class PeakEwma:
    """Latency estimate that jumps up at once on a slow answer and decays back slowly.

    Like Finagle's/Linkerd's peak-EWMA: a sample above the estimate replaces it;
    one below pulls it down with weight 1 - exp(-dt / tau)."""

    tau: float = 10.0
    value: float | None = None
    stamp: float = 0.0

    def observe(self, sample: float, now: float) -> None:
        if self.value is None or sample >= self.value:
            self.value = sample
        else:
            weight = math.exp(-max(0.0, now - self.stamp) / self.tau)
            self.value = self.value * weight + sample * (1.0 - weight)
        self.stamp = now


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
    rtt: float | None
    cost: float
    heat: float
    health: str = "healthy"
    tier: str = "L1"


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    rtt_term: float
    cost_term: float
    heat_term: float
    score: float

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
            "cost_per_gb": c.cost,
            "heat": round(c.heat, 3),
            "health": c.health,
            "tier": c.tier,
        }


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def score(candidates: Sequence[Candidate], weights: Weights) -> list[Scored]:
    """Every candidate's normalised components and weighted score, in input order."""
    measured = [c.rtt for c in candidates if c.rtt is not None and c.rtt > 0]
    neutral = _median(measured) if measured else 1.0
    rtts = [c.rtt if c.rtt is not None and c.rtt > 0 else neutral for c in candidates]
    min_rtt = min(rtts) if rtts else 1.0
    min_cost = min((c.cost for c in candidates), default=0.0)
    max_heat = max((c.heat for c in candidates), default=0.0)
    out = []
    for c, rtt in zip(candidates, rtts, strict=True):
        rtt_term = (min_rtt + RTT_EPSILON) / (rtt + RTT_EPSILON) if measured else 1.0
        cost_term = (min_cost + COST_EPSILON) / (c.cost + COST_EPSILON)
        heat_term = c.heat / max_heat if max_heat > 0 else 0.0
        total = weights.rtt * rtt_term + weights.cost * cost_term + weights.heat * heat_term
        out.append(Scored(c, rtt_term, cost_term, heat_term, total))
    return out


def rank(
    scored: Sequence[Scored],
    *,
    mode: str,
    rng: random.Random,
    near_best: float = 0.9,
    fresh_tiers: Iterable[str] = (),
) -> list[Scored]:
    """The order to try candidates in.

    `ordered`: the pool's own order. `best`: by score. `weighted`: the first is
    drawn among the near-best (score >= near_best x the best) with probability
    proportional to score,
    so replicas do not all herd onto one upstream; the rest follow by score.
    Healthy before slow or half-open before ejected; with `fresh_tiers`, those tiers first.
    """
    fresh = set(fresh_tiers)

    def group(s: Scored) -> tuple[int, int]:
        health = {"healthy": 0, "half-open": 1}.get(s.candidate.health, 2)
        if health == 0 and s.rtt_term < SLOW_TERM and mode != "ordered":
            health = 1  # far slower than the best: tried after the others, whatever it costs
        return (0 if not fresh or s.candidate.tier in fresh else 1, health)

    if mode == "ordered":
        return sorted(scored, key=group)  # pool order, healthy first (stable sort)
    ordered = sorted(scored, key=lambda s: (group(s), -s.score))
    if mode != "weighted" or len(ordered) < 2:
        return ordered
    head_group = group(ordered[0])
    best = ordered[0].score
    near = [s for s in ordered if group(s) == head_group and s.score >= near_best * best]
    if len(near) < 2:
        return ordered
    first = rng.choices(near, weights=[max(s.score, 1e-9) for s in near])[0]
    return [first, *(s for s in ordered if s is not first)]
