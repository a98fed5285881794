"""Sharing selection state between replicas through Redis, off the request path.

Every 250 ms this process's new observations (heat increments, its RTT
estimates, ejections it decided) go out in one pipeline; every second the
fleet's view (cost overrides, other replicas' RTT, ejections) comes back in
one pipeline, and heat every five seconds. A slow or dead Redis only delays
sharing: requests keep being ranked on local state, errors are counted, and
the loop reconnects with backoff.

Its keys (`cost`, `rtt:*`, `eject:*`, `heat:*`) are in `router.fleet.keys`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from router.fleet import keys
from router.fleet.client import replica_id
from router.fleet.loop import FAILURES, every
from router.observability import Metrics
from router.state.local import MAX_PENDING, SHARED_RTT_FRESH, SelectionState

log = logging.getLogger("goproxy_router.redis")

FLUSH_SECONDS = 0.25
REFRESH_SECONDS = 1.0
HEAT_REFRESH_SECONDS = 5.0
HEAT_KEEP = 1024
RTT_TTL = 300


class RedisSync:
    """The background loop that keeps one process's state in step with the fleet."""

    def __init__(
        self,
        client: Any,
        state: SelectionState,
        metrics: Metrics,
        *,
        replica: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.state = state
        state.shared = True
        self.metrics = metrics
        self.replica = replica or replica_id()
        self._clock = clock
        self._next_refresh = 0.0
        self._next_heat = 0.0
        self.healthy = False

    async def run(self) -> None:
        await every(FLUSH_SECONDS, self.step, what="selection sync", on_result=self._set_health)

    def _set_health(self, ok: bool) -> None:
        self.healthy = ok
        self.metrics.redis_up.set(1 if ok else 0)

    async def step(self) -> None:
        """One flush, plus a refresh when one is due."""
        await self._timed("flush", self.flush)
        now = self._clock()
        if now >= self._next_refresh:
            await self._timed("refresh", self.refresh)
            self._next_refresh = now + REFRESH_SECONDS
        if now >= self._next_heat:
            await self._timed("heat", self.refresh_heat)
            self._next_heat = now + HEAT_REFRESH_SECONDS

    async def _timed(self, op: str, fn: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        try:
            await fn()
        except FAILURES:
            self.metrics.redis_errors.labels(op).inc()
            raise
        finally:
            self.metrics.redis_seconds.labels(op).observe(time.monotonic() - started)

    async def flush(self) -> None:
        """Push heat increments, this replica's RTT estimates and new ejections."""
        state = self.state
        heat, state.pending_heat = state.pending_heat, {}
        ejections, state.pending_ejections = state.pending_ejections, {}
        now = self._clock()
        window = int(state.heat.window + state.heat.bucket_seconds)
        pipe = self.client.pipeline(transaction=False)
        touched: set[str] = set()
        for (upstream, bucket, module), n in heat.items():
            key = keys.heat(upstream, bucket)
            pipe.zincrby(key, n, module)
            touched.add(key)
        for key in touched:
            pipe.zremrangebyrank(key, 0, -HEAT_KEEP - 1)
            pipe.expire(key, window)
        for name in state.names():
            value = state.live(name).rtt.value
            if value is not None:
                pipe.hset(keys.rtt(name), self.replica, f"{value:.6f}@{now:.3f}")
                pipe.expire(keys.rtt(name), RTT_TTL)
        for name, until in ejections.items():
            ttl_ms = int((until - now) * 1000)
            if ttl_ms > 0:
                pipe.set(keys.eject(name), f"{until:.3f}", px=ttl_ms)
        try:
            await pipe.execute()
        except BaseException:
            self._restore(heat, ejections)
            raise

    def _restore(
        self, heat: dict[tuple[str, int, str], float], ejections: dict[str, float]
    ) -> None:
        """Keep what could not be sent (bounded) for the next flush."""
        state = self.state
        for key, n in heat.items():
            if key in state.pending_heat or len(state.pending_heat) < MAX_PENDING:
                state.pending_heat[key] = state.pending_heat.get(key, 0.0) + n
            else:
                state.dropped += 1
        for name, until in ejections.items():
            state.pending_ejections.setdefault(name, until)

    async def refresh(self) -> None:
        """Pull cost overrides, other replicas' RTT and fleet ejections."""
        names = self.state.names()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.COST)
        for name in names:
            pipe.hgetall(keys.rtt(name))
            pipe.get(keys.eject(name))
        results = await pipe.execute()
        self.state.cost_overrides = _costs(results[0], names)
        now = self._clock()
        for i, name in enumerate(names):
            rtts, eject = results[1 + 2 * i], results[2 + 2 * i]
            live = self.state.live(name)
            live.shared_rtt = _shared_rtt(rtts, self.replica, now)
            if eject is not None:
                with contextlib.suppress(ValueError):
                    live.health.eject_until(float(eject))

    async def refresh_heat(self) -> None:
        """Pull every upstream's heat buckets (top modules) of the current window."""
        heat = self.state.heat
        now = self._clock()
        current = heat.bucket_of(now)
        buckets = range(current - heat.buckets + 1, current + 1)
        names = self.state.names()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for bucket in buckets:
                pipe.zrevrange(keys.heat(name, bucket), 0, heat.top_n - 1, withscores=True)
        results = iter(await pipe.execute())
        for name in names:
            for bucket in buckets:
                rows = next(results)
                if rows:
                    heat.replace(name, bucket, {_text(m): float(s) for m, s in rows})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _costs(raw: dict[Any, Any], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (raw or {}).items():
        name = _text(key)
        try:
            cost = float(_text(value))
        except ValueError:
            continue
        if name in names and cost >= 0:
            out[name] = cost
    return out


def _shared_rtt(raw: dict[Any, Any], me: str, now: float) -> float | None:
    """The mean of other replicas' fresh RTT estimates."""
    values = []
    for key, value in (raw or {}).items():
        if _text(key) == me:
            continue
        seconds, _, stamp = _text(value).partition("@")
        try:
            if now - float(stamp) <= SHARED_RTT_FRESH:
                values.append(float(seconds))
        except ValueError:
            continue
    return sum(values) / len(values) if values else None


async def set_cost(client: Any, name: str, usd_per_gb: float) -> None:
    await client.hset(keys.COST, name, repr(float(usd_per_gb)))


async def get_costs(client: Any) -> dict[str, float]:
    raw = await client.hgetall(keys.COST)
    out = {}
    for key, value in raw.items():
        try:
            out[_text(key)] = float(_text(value))
        except ValueError:
            continue
    return out
