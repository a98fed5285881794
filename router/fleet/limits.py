"""Rate limits and pull counts shared by replicas (keys `replicas`, `rl:*`, `pulls:*`).

Each replica takes tokens locally and reports what it took; what the others took is
charged back here, so a tenant's limit holds for the fleet. While Redis is away each
replica keeps a fair share (1/N of the limit, N as last seen).
"""

from __future__ import annotations

from typing import Any

from router.fleet import keys
from router.fleet.loop import FAILURES, every
from router.limiting import RequestLimits
from router.observability import Metrics


class LimitSync:
    """Shares limiter consumption and pull counts through Redis every 250 ms."""

    async def run(self, metrics: Metrics) -> None:
        def counted(ok: bool) -> None:
            if not ok:
                metrics.redis_errors.labels("limits").inc()

        await every(0.25, self.step, what="rate limit sync", on_result=counted)

    def __init__(self, client: Any, limits: RequestLimits, replica: str) -> None:
        self.client = client
        self.limits = limits
        self.replica = replica
        self._seen_others: dict[str, int] = {}
        self.replicas = 1

    async def step(self) -> None:
        lim = self.limits
        now = lim.clock()
        pending, lim.limiter.pending = lim.limiter.pending, {}
        pulls = lim.pulls
        pull_pending: dict[tuple[str, int], int] = {}
        if pulls is not None:
            pull_pending, pulls.pending = pulls.pending, {}
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.REPLICAS, {self.replica: now})
        pipe.zremrangebyscore(keys.REPLICAS, 0, now - 10)
        pipe.zcard(keys.REPLICAS)
        limit_keys = list(pending)
        for key in limit_keys:
            name = keys.rate(key)
            pipe.hincrby(name, self.replica, pending[key])
            pipe.expire(name, 120)
            pipe.hgetall(name)
        pull_keys: list[str] = []
        if pulls is not None:
            for (key, slot), n in pull_pending.items():
                pipe.incrby(keys.pulls(key, slot), n)
                pipe.expire(keys.pulls(key, slot), int(pulls.window) + 60)
            pull_keys = pulls.keys()[-2000:]
            current = pulls.slot_of(now)
            for key in pull_keys:
                pipe.mget(
                    [keys.pulls(key, s) for s in range(current - pulls.slots + 1, current + 1)]
                )
        try:
            results = await pipe.execute()
        except FAILURES:
            for key, n in pending.items():  # keep, for the next attempt
                lim.limiter.pending[key] = lim.limiter.pending.get(key, 0) + n
            lim.limiter.share = 1.0 / max(1, self.replicas)
            raise
        lim.limiter.share = 1.0
        self.replicas = int(results[2]) or 1
        self._charge(limit_keys, results[3:], now)
        if pulls is not None:
            offset = 3 + 3 * len(limit_keys) + 2 * len(pull_pending)
            for key, counts in zip(pull_keys, results[offset:], strict=False):
                fleet = sum(int(c) for c in counts if c is not None)
                pulls.remote[key] = max(0, fleet - pulls.local(key, now))

    def _charge(self, limit_keys: list[str], rows: list[Any], now: float) -> None:
        for i, key in enumerate(limit_keys):
            hashed = rows[3 * i + 2] or {}
            others = sum(
                int(v)
                for k, v in hashed.items()
                if (k.decode() if isinstance(k, bytes) else k) != self.replica
            )
            before = self._seen_others.get(key)
            self._seen_others[key] = others
            if before is not None and others > before:
                self.limits.limiter.charge(key, others - before, now)
        if len(self._seen_others) > 200_000:
            self._seen_others.clear()
