"""Sharing selection state between replicas through Redis, off the request path.

Every 250 ms this process's new observations (heat increments, its RTT
estimates, ejections it decided) go out in one pipeline; every second the
fleet's view (cost overrides, other replicas' RTT, ejections) comes back in
one pipeline, and heat every five seconds. A slow or dead Redis only delays
sharing: requests keep being ranked on local state, errors are counted, and
the loop reconnects with backoff.

Keys (prefix `goproxy-router:`):

- `cost` (hash): upstream -> USD per GB override (`goproxy-router cost set`)
- `rtt:<upstream>` (hash): replica id -> `seconds@unix time`; expires after 5 min idle
- `eject:<upstream>` (string): unix time the ejection ends; expires then
- `heat:<upstream>:<bucket>` (sorted set): module -> requests served in that
  time bucket; the top 1024 kept; expires after the heat window
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from router.observability import Metrics
from router.state.local import MAX_PENDING, SHARED_RTT_FRESH, SelectionState

log = logging.getLogger("goproxy_router.redis")

PREFIX = "goproxy-router:"
FLUSH_SECONDS = 0.25
REFRESH_SECONDS = 1.0
HEAT_REFRESH_SECONDS = 5.0
HEAT_KEEP = 1024
RTT_TTL = 300


def connect(url: str, *, socket_timeout: float | None = 0.5) -> Any:
    """A redis-py asyncio client for a standalone, Sentinel or Cluster URL.

    `redis://`, `rediss://`, `unix://`: one server. `redis+cluster://host:port`:
    a cluster. `redis+sentinel://host:port[,host:port]/SERVICE[/DB]`: the
    master named SERVICE, found through the sentinels."""
    opts: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 0.5}
    scheme = urlsplit(url).scheme
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisCluster.from_url(url.replace("+cluster", "", 1), **opts)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        parts = urlsplit(url)
        hosts = []
        for item in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host or item, int(port) if port.isdigit() else 26379))
        path = [p for p in parts.path.split("/") if p]
        service = path[0] if path else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(hosts, **opts)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service, db=db, **opts)
    return aioredis.from_url(url, **opts)


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
        backoff = 0.0
        while True:
            await asyncio.sleep(backoff or FLUSH_SECONDS)
            try:
                await self.step()
                backoff = 0.0
                self._set_health(True)
            except (RedisError, OSError, TimeoutError) as exc:
                self._set_health(False)
                backoff = min(max(0.25, backoff * 2), 5.0)
                log.warning("redis unavailable (%s); serving on local state", type(exc).__name__)

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
        except (RedisError, OSError, TimeoutError):
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
            key = f"{PREFIX}heat:{upstream}:{bucket}"
            pipe.zincrby(key, n, module)
            touched.add(key)
        for key in touched:
            pipe.zremrangebyrank(key, 0, -HEAT_KEEP - 1)
            pipe.expire(key, window)
        for name in state.names():
            value = state.live(name).rtt.value
            if value is not None:
                pipe.hset(f"{PREFIX}rtt:{name}", self.replica, f"{value:.6f}@{now:.3f}")
                pipe.expire(f"{PREFIX}rtt:{name}", RTT_TTL)
        for name, until in ejections.items():
            ttl_ms = int((until - now) * 1000)
            if ttl_ms > 0:
                pipe.set(f"{PREFIX}eject:{name}", f"{until:.3f}", px=ttl_ms)
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
        pipe.hgetall(f"{PREFIX}cost")
        for name in names:
            pipe.hgetall(f"{PREFIX}rtt:{name}")
            pipe.get(f"{PREFIX}eject:{name}")
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
                pipe.zrevrange(f"{PREFIX}heat:{name}:{bucket}", 0, heat.top_n - 1, withscores=True)
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
    await client.hset(f"{PREFIX}cost", name, repr(float(usd_per_gb)))


async def get_costs(client: Any) -> dict[str, float]:
    raw = await client.hgetall(f"{PREFIX}cost")
    out = {}
    for key, value in raw.items():
        try:
            out[_text(key)] = float(_text(value))
        except ValueError:
            continue
    return out
