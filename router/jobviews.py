"""L3 job views and offline mode, executed: the decisions are `router.core.jobviews`
and the plan's `job`, `pinned` and `offline`.

A view maps a job's mutable questions to the first answer they got. Two stores behind
one `ViewStore` protocol: `MemoryViews` (embedded, one process) and `RedisViews`
(shared by replicas; keys `job:*`, `jobs`, `jobsize` in `router.fleet.keys`). While
Redis does not answer, `RedisViews` keeps pinning in this process's memory, so a request
never fails for it. Time is an injected clock: expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from redis.exceptions import RedisError

from router.core.jobviews import (
    Live,
    offline_refusal,
    pinnable,
    question,
    to_drop,
    view_id,
    view_parts,
)
from router.core.model import Jobs, Rules
from router.core.plan import Plan
from router.fleet import keys
from router.observability import Metrics
from router.serving.record import Served
from router.serving.responses import UPSTREAM_HEADER, text_response

if TYPE_CHECKING:
    from router.serving.cache import AnswerCache

log = logging.getLogger("goproxy_router.jobviews")

Clock = Callable[[], float]
Drops = list[tuple[str, str]]  # (view, reason)
_ERRORS = (RedisError, OSError, TimeoutError, ValueError)
REDIS_TIMEOUT = 0.25
REDIS_BACKOFF = 5.0  # seconds Redis is skipped after a failed exchange


@dataclass(frozen=True, slots=True)
class Pin:
    """A recorded answer: served byte for byte to the job's later requests."""

    status: int
    content_type: str | None
    upstream: str
    pinned_at: float
    body: bytes

    def encode(self) -> bytes:
        head = {
            "status": self.status,
            "content_type": self.content_type,
            "upstream": self.upstream,
            "pinned_at": self.pinned_at,
        }
        return json.dumps(head).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> Pin:
        head, _, body = raw.partition(b"\n")
        return cls(body=body, **json.loads(head))

    def response(self) -> web.Response:
        headers = {UPSTREAM_HEADER: "cache", "X-Router-Job-Pinned": _http_date(self.pinned_at)}
        if self.content_type:
            headers["Content-Type"] = self.content_type
        return web.Response(status=self.status, body=self.body, headers=headers)


def _http_date(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class ViewStore(Protocol):
    """Where job views live. `put` keeps the first answer: it returns the pin that holds
    (another request's, when one was first). `gc` drops what is idle or over the bounds."""

    async def get(self, view: str, q: str) -> Pin | None: ...

    async def put(self, view: str, q: str, pin: Pin) -> Pin: ...

    async def show(self, view: str) -> dict[str, Any] | None: ...

    async def drop(self, view: str) -> bool: ...

    async def gc(self, keep: str | None = None) -> Drops: ...

    async def count(self) -> int: ...

    async def configure(self, cfg: Jobs) -> None: ...


# ------------------------------------------------------------------ embedded


@dataclass(slots=True)
class _View:
    touched: float
    pins: dict[str, Pin] = field(default_factory=dict)
    bytes: int = 0


def _show(
    view: str, touched: float, pins: dict[str, Pin], ttl: float, now: float
) -> dict[str, Any]:
    tenant, job = view_parts(view)
    return {
        "tenant": tenant,
        "job": job,
        "idle_seconds": round(max(0.0, now - touched), 3),
        "expires_in_seconds": round(max(0.0, touched + ttl - now), 3),
        "bytes": sum(len(p.body) for p in pins.values()),
        "pins": [
            {
                "question": q,
                "status": p.status,
                "upstream": p.upstream,
                "pinned_at": _http_date(p.pinned_at),
                "bytes": len(p.body),
            }
            for q, p in sorted(pins.items())
        ],
    }


class MemoryViews:
    """Job views in this process's memory."""

    def __init__(self, cfg: Jobs, clock: Clock = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self._views: dict[str, _View] = {}

    async def get(self, view: str, q: str) -> Pin | None:
        found = self._views.get(view)
        if found is None or self.clock() - found.touched >= self.cfg.ttl:
            return None
        found.touched = self.clock()
        return found.pins.get(q)

    async def put(self, view: str, q: str, pin: Pin) -> Pin:
        now = self.clock()
        found = self._views.get(view)
        if found is None or now - found.touched >= self.cfg.ttl:
            found = self._views[view] = _View(now)
        found.touched = now
        held = found.pins.setdefault(q, pin)
        if held is pin:
            found.bytes += len(pin.body)
            await self.gc(keep=view)
        return held

    async def show(self, view: str) -> dict[str, Any] | None:
        found = self._views.get(view)
        now = self.clock()
        if found is None or now - found.touched >= self.cfg.ttl:
            return None
        return _show(view, found.touched, found.pins, self.cfg.ttl, now)

    async def drop(self, view: str) -> bool:
        return self._views.pop(view, None) is not None

    async def gc(self, keep: str | None = None) -> Drops:
        live = [Live(name, v.touched, v.bytes) for name, v in self._views.items()]
        drops = to_drop(live, self.clock(), **_bounds(self.cfg), keep=keep)
        for name, _ in drops:
            self._views.pop(name, None)
        return drops

    async def count(self) -> int:
        return len(self._views)

    async def configure(self, cfg: Jobs) -> None:
        """New bounds (a reload): they hold from the next request and collection."""
        self.cfg = cfg


def _bounds(cfg: Jobs) -> dict[str, Any]:
    return {"ttl": cfg.ttl, "max_views": cfg.max_views, "max_bytes": cfg.max_bytes}


# ------------------------------------------------------------------ Redis


class RedisViews:
    """Job views shared by every replica through Redis; `local` while Redis is away."""

    def __init__(
        self,
        client: Any,
        cfg: Jobs,
        clock: Clock = time.time,
        on_error: Callable[[str], None] = lambda op: None,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.clock = clock
        self.local = MemoryViews(cfg, clock)
        self._on_error = on_error
        self._skip_until = 0.0
        self._added = 0  # bytes this replica pinned since its last collection

    def _usable(self) -> bool:
        return self.clock() >= self._skip_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self._on_error(op)
        self._skip_until = self.clock() + REDIS_BACKOFF
        log.warning("job views: redis %s failed (%s); pinning in this process", op, exc)

    async def _run(self, op: str, work: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        if not self._usable():
            return False, None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                return True, await work()
        except _ERRORS as exc:
            self._failed(op, exc)
            return False, None

    async def get(self, view: str, q: str) -> Pin | None:
        async def work() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(keys.job(view), q)
            pipe.zscore(keys.JOBS, view)
            raw, touched = await pipe.execute()
            now = self.clock()
            if touched is None or now - float(touched) >= self.cfg.ttl:
                return None  # idle past the TTL (by this clock): as good as collected
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(keys.JOBS, {view: now}, xx=True)
            pipe.pexpire(keys.job(view), int(self.cfg.ttl * 1000))
            await pipe.execute()
            return raw

        ok, got = await self._run("job_get", work)
        if not ok:
            return await self.local.get(view, q)
        return Pin.decode(got) if got else None

    async def put(self, view: str, q: str, pin: Pin) -> Pin:
        raw = pin.encode()

        async def work() -> Any:
            touched = await self.client.zscore(keys.JOBS, view)
            if touched is not None and self.clock() - float(touched) >= self.cfg.ttl:
                await self._delete([view])  # idle past the TTL: this job starts afresh
            pipe = self.client.pipeline(transaction=False)
            pipe.hsetnx(keys.job(view), q, raw)
            pipe.hget(keys.job(view), q)
            pipe.zadd(keys.JOBS, {view: self.clock()})
            pipe.pexpire(keys.job(view), int(self.cfg.ttl * 1000))
            pipe.zcard(keys.JOBS)
            added, held, _, _, views = await pipe.execute()
            if added:
                await self.client.hincrby(keys.JOB_SIZES, view, len(pin.body))
            return held, added, views

        ok, got = await self._run("job_put", work)
        if not ok:
            return await self.local.put(view, q, pin)
        held, added, views = got
        if added:
            self._added += len(pin.body)
            # the count bound at once; the bytes bound at each collection, and as soon as
            # this replica alone pinned 1/16 of it since the last one
            if views > self.cfg.max_views or self._added > self.cfg.max_bytes // 16:
                await self.gc(keep=view)
        return pin if added or not held else Pin.decode(held)

    async def show(self, view: str) -> dict[str, Any] | None:
        async def work() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(keys.job(view))
            pipe.zscore(keys.JOBS, view)
            return await pipe.execute()

        ok, got = await self._run("job_show", work)
        if not ok:
            return await self.local.show(view)
        fields, touched = got
        now = self.clock()
        if not fields or touched is None or now - float(touched) >= self.cfg.ttl:
            return None
        pins = {k.decode(): Pin.decode(v) for k, v in fields.items()}
        return _show(view, float(touched), pins, self.cfg.ttl, now)

    async def drop(self, view: str) -> bool:
        async def work() -> Any:
            return await self._delete([view])

        ok, got = await self._run("job_drop", work)
        local = await self.local.drop(view)
        return (ok and bool(got)) or local

    async def _delete(self, views: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for view in views:
            pipe.delete(keys.job(view))
        pipe.zrem(keys.JOBS, *views)
        pipe.hdel(keys.JOB_SIZES, *views)
        done = await pipe.execute()
        return sum(int(n) for n in done[: len(views)])

    async def gc(self, keep: str | None = None) -> Drops:
        async def work() -> Drops:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrange(keys.JOBS, 0, -1, withscores=True)
            pipe.hgetall(keys.JOB_SIZES)
            members, sizes = await pipe.execute()
            size = {k.decode(): int(v) for k, v in sizes.items()}
            live = [Live(m.decode(), float(s), size.get(m.decode(), 0)) for m, s in members]
            drops = to_drop(live, self.clock(), **_bounds(self.cfg), keep=keep)
            listed = {v.view for v in live}
            stray = [v for v in size if v not in listed]  # sizes left by an interrupted drop
            gone = [v for v, _ in drops] + stray
            if gone:
                await self._delete(gone)
            return drops

        self._added = 0
        ok, got = await self._run("job_gc", work)
        local = await self.local.gc(keep)
        return list(got) + local if ok else local

    async def count(self) -> int:
        ok, got = await self._run("job_count", lambda: self.client.zcard(keys.JOBS))
        return int(got) if ok else await self.local.count()

    async def configure(self, cfg: Jobs) -> None:
        """New bounds; each held view's Redis expiry is set again from its last use, so
        a longer TTL keeps a view the old one would have expired."""
        longer = cfg.ttl > self.cfg.ttl
        self.cfg = cfg
        await self.local.configure(cfg)
        if not longer:
            return  # a shorter TTL is enforced on read and at collection

        async def work() -> Any:
            members = await self.client.zrange(keys.JOBS, 0, -1, withscores=True)
            now = self.clock()
            pipe = self.client.pipeline(transaction=False)
            for view, touched in members:
                left = float(touched) + cfg.ttl - now
                if left > 0:
                    pipe.pexpire(keys.job(view.decode()), max(1, int(left * 1000)))
            await pipe.execute()

        await self._run("job_configure", work)


# ------------------------------------------------------------------ executing plans


Answer = Callable[[], Awaitable[web.StreamResponse]]


class JobViews:
    """Serves the plans that have a job view or are offline; counts what happens."""

    def __init__(self, store: ViewStore, metrics: Metrics, cfg: Jobs) -> None:
        self.store = store
        self.metrics = metrics
        self.clock: Clock = getattr(store, "clock", time.time)
        self.jobs = cfg

    @property
    def interval(self) -> float:
        """Seconds between collections (read at each turn of the loop)."""
        return gc_interval(self.jobs)

    async def apply_rules(self, rules: Rules) -> None:
        """A reload's `jobs:` bounds: the TTL, count and bytes every view is held to from
        now on, the views already held included (collected at once)."""
        if rules.jobs == self.jobs:
            return
        self.jobs = rules.jobs
        await self.store.configure(rules.jobs)
        try:
            await self.collect()
        except Exception:  # the reload goes on; the loop collects again later
            log.exception("job view collection after a reload failed")

    async def serve(
        self,
        http: web.Request,
        plan: Plan,
        served: Served,
        online: Answer,
        answers: AnswerCache | None,
    ) -> web.StreamResponse:
        """A pinned answer when the job has one; else the answer (online, or from the
        cache only when offline), pinned when it is the job's first."""
        view = q = None
        if plan.pinned and plan.job is not None:
            view, q = view_id(plan.identity.tenant_id, plan.job), question(plan.request)
        if view is not None and q is not None:
            pin = await self.store.get(view, q)
            if pin is not None:
                self.metrics.job_pins.labels("served").inc()
                served.from_cache("pinned")
                served.answered(pin.status)
                return pin.response()
        if plan.offline:
            resp = await self._offline(http, plan, served, answers)
        else:
            resp = await online()
        if view is None or q is None or not pinnable(resp.status):
            return resp
        if not isinstance(resp, web.Response) or not isinstance(resp.body, bytes):
            return resp  # a streamed answer: never a mutable question's
        pin = Pin(
            resp.status,
            resp.content_type if resp.body else None,
            resp.headers.get(UPSTREAM_HEADER, ""),
            self.clock(),
            resp.body,
        )
        held = await self.store.put(view, q, pin)
        if held is pin:
            self.metrics.job_pins.labels("pinned").inc()
            return resp
        self.metrics.job_pins.labels("served").inc()  # another request of the job was first
        served.from_cache("pinned")
        return held.response()

    async def _offline(
        self, http: web.Request, plan: Plan, served: Served, answers: AnswerCache | None
    ) -> web.StreamResponse:
        """Only what a tier holds, fresh or stale; no upstream is ever contacted."""
        if answers is not None:
            found = await answers.cached(http, plan.request, plan.pool, plan.key, served)
            if found is not None:
                return found
        mode = plan.offline.split(":", 1)[0].split(" ", 1)[0]  # network, route, job
        self.metrics.offline_misses.labels(mode).inc()
        served.from_cache("offline")
        return text_response(404, offline_refusal(plan.offline, plan.request))

    async def collect(self) -> Drops:
        """Drop idle and over-bound views; refresh the live-views gauge."""
        drops = await self.store.gc()
        for _, reason in drops:
            self.metrics.job_drops.labels(reason).inc()
        self.metrics.job_views.set(await self.store.count())
        return drops

    async def run(self) -> None:
        """`collect` every `interval` seconds (a quarter of the TTL), for as long as the
        gateway runs."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.collect()
            except Exception:  # a bug here must not end the loop
                log.exception("job view collection failed")

    async def drop(self, tenant: str | None, job: str) -> bool:
        dropped = await self.store.drop(view_id(tenant, job))
        if dropped:
            self.metrics.job_drops.labels("admin").inc()
        return dropped

    async def show(self, tenant: str | None, job: str) -> dict[str, Any] | None:
        return await self.store.show(view_id(tenant, job))


def build_job_views(
    cfg: Jobs, metrics: Metrics, redis_client: Any | None, clock: Clock = time.time
) -> JobViews:
    """The job views of a gateway: in Redis when it has one, else in memory."""
    store: ViewStore
    if redis_client is not None:
        store = RedisViews(
            redis_client,
            cfg,
            on_error=lambda op: metrics.redis_errors.labels(op).inc(),
            clock=clock,
        )
    else:
        store = MemoryViews(cfg, clock)
    return JobViews(store, metrics, cfg)


def gc_interval(cfg: Jobs) -> float:
    """How often views are collected: a quarter of the TTL, between 1 s and 60 s."""
    return min(60.0, max(1.0, cfg.ttl / 4))
