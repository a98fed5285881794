"""The answer cache: the serving path from a decided request to its answer.

In order: a fresh memory hit (`fast_hit`, before any ranking); memory again (stale:
served, refreshed in the background); the disk store (immutable answers, sent from
their file); then a miss — metadata coalesced per key after a look at Redis
(`SingleFlight`), zips coalesced byte by byte (`router.serving.zips`). A fetch is the
pool walk (`Job.walk`), compared for a rollout (`router.serving.comparing`) or
verified; what it returns is kept (`router.serving.keeping`) and answered, or, when it
failed, a stale copy answers in its place (`router.serving.freshness`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable

from aiohttp import web

from router.cache.disk import Spool, SpoolBudget
from router.cache.health import StorageHealth
from router.cache.memory import Entry
from router.checksums import ChecksumUnavailable
from router.core.fallback import Failure
from router.core.model import Cache, Pool, Rules
from router.core.protocol import Kind, ModuleRequest, SumdbRequest
from router.observability import Metrics
from router.rollouts import Rollouts
from router.serving.comparing import Comparer
from router.serving.flights import SingleFlight
from router.serving.freshness import Revalidator, stale_if_error
from router.serving.job import Job
from router.serving.keeping import Inspect, Keeper, Tiers, count
from router.serving.record import Served
from router.serving.responses import (
    UPSTREAM_HEADER,
    entry_response,
    failure_response,
    respond,
    supported_probe,
)
from router.serving.walk import Walked
from router.serving.zips import ZipPath
from router.spooling import Spools, Tee
from router.tasks import TaskGroup
from router.upstream import UpstreamAnswer

FOLLOWER_WAIT = 1.0  # seconds a replica waits for another replica's fetch


def new_owner() -> str:
    """A name for this process in the fleet's fetch locks."""
    return uuid.uuid4().hex[:12]


class AnswerCache:
    """Cache lookups and coalesced fetches for one gateway process."""

    def __init__(
        self,
        cfg: Cache,
        metrics: Metrics,
        tasks: TaskGroup,
        tiers: Tiers,
        *,
        spools: Spools | None = None,
        stall: float = 60.0,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        rollouts: Rollouts | None = None,
        inspect: Inspect | None = None,
    ) -> None:
        """`owner` names this process in the fleet's fetch locks; `rollouts` are compared
        on sampled requests (what a rolled-back one served is forgotten); `inspect` looks
        at every whole zip (the policy's licence check)."""
        self.metrics = metrics
        self.tasks = tasks
        self.tiers = tiers
        self._clock = clock
        self.owner = owner or new_owner()
        store = tiers.store
        self.spools = spools or Spools(SpoolBudget(cfg.spool, store), StorageHealth(), store=store)
        self.keeper = Keeper(tiers, cfg, metrics, tasks, clock, rollouts=rollouts, inspect=inspect)
        self._comparer = Comparer(rollouts, self.spools.new) if rollouts is not None else None
        self.zips = ZipPath(
            tiers, self.keeper, self.spools, cfg, metrics, tasks, clock, stall, self._comparer
        )
        self._meta = SingleFlight[UpstreamAnswer | Failure]()
        self._revalidator = Revalidator(tasks)
        if rollouts is not None:
            rollouts.on_rollback.append(self.keeper.drop_upstream)

    def apply_rules(self, rules: Rules) -> None:
        """A reload's lifetimes (`cache.ttl`, `cache.stale_if_error`), `cache.bad_zips`
        and `server.stall_timeout`, for answers fetched from now on; the tiers' sizes are
        the process's (`router.core.restart`)."""
        self.keeper.cfg = self.zips.cfg = rules.cache
        self.zips.stall = rules.server.stall_timeout

    @property
    def keeps_nothing(self) -> bool:
        """No tier at all (memory 0, no dir): plain requests need none of this."""
        tiers = self.tiers
        return tiers.memory is None and tiers.store is None and tiers.shared is None

    # ------------------------------------------------------------------ entry points

    def fast_hit(
        self, request: ModuleRequest | SumdbRequest, key: str, served: Served
    ) -> web.Response | None:
        """A fresh memory hit, answered before any upstream ranking (None otherwise)."""
        memory = self.tiers.memory
        if memory is None:
            return None
        now = self._clock()
        entry = memory.get_fresh(key, now)
        if entry is None:
            return None  # serve() looks again, and records the miss, after ranking
        self.metrics.cache_requests.labels(request.kind.value, "hit").inc()
        served.from_cache("hit")
        return entry_response(entry, now)

    async def serve(self, http: web.Request, job: Job) -> web.StreamResponse:
        request = job.request
        if isinstance(request, SumdbRequest) and request.is_supported_probe:
            return supported_probe(request, job.clients)
        key = job.key
        hit = self._memory_hit(job, key, self._clock())
        if hit is not None:
            return hit
        store = self.tiers.store
        if request.immutable and store is not None:
            found = store.get(key)
            if found is not None:
                art, path = found
                tee = Tee.of_file(path, art.size, content_type=art.content_type, upstream="cache")
                reader = tee.attach() if tee is not None else None
                if tee is not None and reader is not None:
                    count(self.metrics, job, "hit")
                    with store.pinned(key):  # not evicted under this client
                        resp = await self.zips.send(
                            http, job, tee, reader, stored=art.stored, path=path
                        )
                    if tee.unreadable:
                        store.forget(key)  # fetch it again next time
                    return resp
                store.forget(key)  # its file is gone: fetch it again
        if http.method == "HEAD":
            return await self._passthrough(http, job)
        if request.kind is Kind.ZIP:
            return await self.zips.miss(http, job, key)
        return await self._meta_miss(job, key)

    async def cached(
        self,
        http: web.Request,
        request: ModuleRequest | SumdbRequest,
        pool: Pool,
        key: str,
        served: Served,
    ) -> web.StreamResponse | None:
        """What a tier holds for `key`, fresh or stale, without asking any upstream and
        without refreshing (offline mode, `router.jobviews`); None when none holds it."""
        if isinstance(request, SumdbRequest) and request.is_supported_probe:
            return None
        job = Job(request, pool, (), served, {}, private=False)
        now = self._clock()
        tiers = self.tiers
        look = tiers.memory.get(key, now) if tiers.memory is not None else None
        if look is not None:
            count(self.metrics, job, "hit")
            return entry_response(look.entry, now)
        found = tiers.store.get(key) if request.immutable and tiers.store is not None else None
        if found is not None:
            art, path = found
            tee = Tee.of_file(path, art.size, content_type=art.content_type, upstream="cache")
            reader = tee.attach() if tee is not None else None
            if tee is not None and reader is not None:
                count(self.metrics, job, "hit")
                return await self.zips.send(http, job, tee, reader, stored=art.stored)
        shared = tiers.shared if request.kind is not Kind.ZIP else None
        entry = await shared.get(key) if shared is not None else None
        if entry is not None:
            count(self.metrics, job, "hit")
            return entry_response(entry, now)
        return None

    def _memory_hit(self, job: Job, key: str, now: float) -> web.StreamResponse | None:
        memory = self.tiers.memory
        look = memory.get(key, now) if memory is not None else None
        if look is None:
            return None
        if look.fresh:
            count(self.metrics, job, "hit")
            return entry_response(look.entry, now)
        count(self.metrics, job, "stale")
        shadow = dataclasses.replace(job, served=Served(), rollout=None)
        self._revalidator.refresh_later(key, lambda: self._fetch_meta(shadow, key))
        return entry_response(look.entry, now)

    async def _passthrough(self, http: web.Request, job: Job) -> web.StreamResponse:
        return await direct(http, job)

    # ------------------------------------------------------------------ metadata

    async def _meta_miss(self, job: Job, key: str) -> web.StreamResponse:
        if key in self._meta:
            count(self.metrics, job, "coalesced")
            self.metrics.coalesced.inc()
            result = await self._meta.follow(key)
        else:
            shared = await self._shared_lookup(job, key)
            if shared is not None:
                count(self.metrics, job, "hit")
                return entry_response(shared, self._clock())
            count(self.metrics, job, "miss")
            result = await self._meta.lead(key, lambda: self._fetch_meta(job, key))
        return self._meta_response(job, key, result)

    async def _shared_lookup(self, job: Job, key: str) -> Entry | None:
        """The shared tier's answer, or another replica's fetch awaited briefly."""
        shared = self.tiers.shared
        if shared is None or not job.admission.admitted:
            return None  # a version not admitted is never in Redis
        now = self._clock()
        entry = await shared.get(key)
        if entry is not None and now < entry.fresh_until:
            self.tiers.remember(key, entry, now)
            return entry
        if not await shared.lock(key, self.owner):
            self.metrics.coalesced.inc()
            entry = await shared.wait_for(key, FOLLOWER_WAIT)
            if entry is not None:
                self.tiers.remember(key, entry, self._clock())
                return entry
        return None

    async def _fetch_meta(self, job: Job, key: str) -> UpstreamAnswer | Failure:
        """Fetch an answer read whole (compared when sampled for a rollout), account for
        it in the job's record and keep it."""
        try:
            try:
                walked: Walked
                if job.rollout is not None and self._comparer is not None:
                    walked = await self._comparer.meta(job, job.rollout)
                else:
                    walked = await job.walk(method="GET", stream=False)
            except ChecksumUnavailable as exc:
                return Failure(502, str(exc), None)  # fail closed, never cached
            job.served.took(walked)
            self.keeper.answer(job, key, walked.result)
            return walked.result
        finally:
            if self.tiers.shared is not None:
                self.tasks.spawn(self.tiers.shared.unlock(key), name="cache-unlock")

    def _meta_response(
        self, job: Job, key: str, result: UpstreamAnswer | Failure
    ) -> web.StreamResponse:
        now = self._clock()
        if isinstance(result, Failure):
            stale = stale_if_error(self.tiers.memory, key, result, now)
            if stale is not None:
                count(self.metrics, job, "stale_if_error")
                return entry_response(stale, now)
            return failure_response(result)
        job.served.follows(result.upstream)
        job.served.answered(200, len(result.body or b""))
        headers = {UPSTREAM_HEADER: result.upstream}
        if result.content_type:
            headers["Content-Type"] = result.content_type
        return web.Response(status=200, body=result.body or b"", headers=headers)

    # ------------------------------------------------------------------ the rest

    def new_spool(self, size: int | None) -> Spool | None:
        """A spool for a body of `size` bytes within the budget (None: no room)."""
        return self.spools.new(size)

    def drop_upstream(self, upstream: str) -> None:
        self.keeper.drop_upstream(upstream)

    async def close(self) -> None:
        if self.tiers.bucket is not None:
            await self.tiers.bucket.close()
        await asyncio.to_thread(self.spools.close)


async def direct(http: web.Request, job: Job) -> web.StreamResponse:
    """`job` answered by the first upstream that serves it, read whole, past every cache
    (no tier at all, or a HEAD; zips, which are streamed, go through `ZipPath`)."""
    request = job.request
    if isinstance(request, SumdbRequest) and request.is_supported_probe:
        return supported_probe(request, job.clients)
    walked = await job.walk(method=http.method, stream=False)
    job.served.took(walked)
    if isinstance(walked.result, Failure):
        return failure_response(walked.result)
    return await respond(http, walked.result, job.served)
