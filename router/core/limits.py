"""How much a client may ask: token buckets (GCRA) and abusive-pull windows.

Pure arithmetic on injected time. A `Limiter` holds one GCRA bucket per key
(bounded: least recently used keys are forgotten); what other replicas
consumed is charged into the same buckets by the shared store, so the fleet
converges on one limit. `share` scales every limit down when this replica
must enforce a fair part of it alone (the shared store is unreachable).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from router.core.model import Rate


@dataclass(slots=True)
class Gcra:
    """Generic cell rate algorithm: a token bucket kept as one timestamp."""

    tat: float = 0.0  # theoretical arrival time of the next request

    def take(self, now: float, rate: float, burst: float, n: float = 1.0) -> float:
        """Take `n` tokens: 0.0 when allowed, else the seconds until it would be."""
        interval = 1.0 / rate
        new_tat = max(self.tat, now) + n * interval
        allowed_at = new_tat - burst * interval
        if allowed_at > now + 1e-9:
            return allowed_at - now
        self.tat = new_tat
        return 0.0

    def charge(self, now: float, rate: float, n: float) -> None:
        """Consume `n` tokens spent elsewhere (other replicas), allowed or not."""
        self.tat = max(self.tat, now) + n / rate


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float  # tokens per second
    burst: float
    text: str  # as written, for messages: "100/s"

    @classmethod
    def of(cls, rate: Rate, burst: int) -> Limit:
        return cls(rate.per_second, float(burst), rate.text)


@dataclass(slots=True)
class Limiter:
    """Token buckets by key, bounded in count; counts what it allowed for sharing."""

    max_keys: int = 100_000
    share: float = 1.0
    _buckets: OrderedDict[str, Gcra] = field(default_factory=OrderedDict)
    pending: dict[str, int] = field(default_factory=dict)
    limits: dict[str, Limit] = field(default_factory=dict)

    def check(self, key: str, limit: Limit, now: float) -> float:
        """0.0 when a request for `key` is allowed now, else seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Gcra()
            if len(self._buckets) > self.max_keys:
                old, _ = self._buckets.popitem(last=False)
                self.limits.pop(old, None)
        else:
            self._buckets.move_to_end(key)
        self.limits[key] = limit
        share = max(self.share, 1e-3)
        wait = bucket.take(now, limit.rate * share, max(1.0, limit.burst * share))
        if wait == 0.0:
            self.pending[key] = self.pending.get(key, 0) + 1
        return wait

    def charge(self, key: str, n: float, now: float) -> None:
        """Tokens other replicas spent for `key`."""
        bucket = self._buckets.get(key)
        limit = self.limits.get(key)
        if bucket is not None and limit is not None and n > 0:
            bucket.charge(now, limit.rate, n)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(slots=True)
class Flag:
    key: str
    count: int
    since: float
    until: float


@dataclass(slots=True)
class PullWindow:
    """Pulls per key over a sliding window of `slots` sub-buckets; flags keys past the
    threshold until `cooldown` after their last excess. Bounded in keys."""

    window: float
    threshold: int
    cooldown: float
    slots: int = 10
    max_keys: int = 100_000
    _counts: OrderedDict[str, dict[int, int]] = field(default_factory=OrderedDict)
    remote: dict[str, int] = field(default_factory=dict)  # other replicas' pulls in the window
    pending: dict[tuple[str, int], int] = field(default_factory=dict)
    flags: dict[str, Flag] = field(default_factory=dict)

    def slot_of(self, now: float) -> int:
        return int(now // (self.window / self.slots))

    def local(self, key: str, now: float) -> int:
        current = self.slot_of(now)
        counts = self._counts.get(key, {})
        return sum(n for s, n in counts.items() if s > current - self.slots)

    def record(self, key: str, now: float) -> Flag | None:
        """Count one pull; returns the flag when this pull newly flags the key."""
        slot = self.slot_of(now)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = {}
            if len(self._counts) > self.max_keys:
                old, _ = self._counts.popitem(last=False)
                self.remote.pop(old, None)
        else:
            self._counts.move_to_end(key)
        counts[slot] = counts.get(slot, 0) + 1
        for stale in [s for s in counts if s <= slot - self.slots]:
            del counts[stale]
        self.pending[(key, slot)] = self.pending.get((key, slot), 0) + 1
        total = self.local(key, now) + self.remote.get(key, 0)
        if total <= self.threshold:
            return None
        flag = self.flags.get(key)
        if flag is not None and flag.until > now:
            flag.until, flag.count = now + self.cooldown, total
            return None
        flag = Flag(key, total, now, now + self.cooldown)
        self.flags[key] = flag
        return flag

    def flagged(self, key: str, now: float) -> bool:
        flag = self.flags.get(key)
        if flag is None:
            return False
        if flag.until <= now:
            del self.flags[key]
            return False
        return True

    def active(self, now: float) -> list[Flag]:
        for key in [k for k, f in self.flags.items() if f.until <= now]:
            del self.flags[key]
        return sorted(self.flags.values(), key=lambda f: -f.count)

    def keys(self) -> list[str]:
        return list(self._counts)
