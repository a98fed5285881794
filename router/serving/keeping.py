"""Keeping answers: which tiers an answer goes to, and the checks a zip passes first.

Memory keeps everything its budget allows; Redis keeps small answers, and the disk
store immutable ones, of admitted versions only (L2 admission, `router.admitting`);
a whole zip is checked by Go's rules (and looked at by the policy's licence check)
before any tier keeps it, and is published to the bucket once the store has it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from router.admitting import keeps
from router.cache.disk import ArtifactStore, check_module_zip
from router.cache.memory import Entry, MemoryCache
from router.cache.shared import SharedTier
from router.cache.tiers import redis_ttl
from router.core.fallback import Failure
from router.core.lifetimes import lifetime
from router.core.model import Cache
from router.core.protocol import Kind, ModuleRequest
from router.observability import Metrics
from router.rollouts import Rollouts
from router.serving.job import Job
from router.spooling import Tee
from router.tasks import TaskGroup
from router.upstream import UpstreamAnswer

if TYPE_CHECKING:
    from router.cache.bucket_tier import BucketTier
    from router.retention import BucketAccess

log = logging.getLogger("goproxy_router.caching")

SMALL_ZIP = 1 << 20  # zips up to this size may live in the memory cache
Inspect = Callable[[str, str, Path], Awaitable[None]]
"""Looks at every whole zip before it is marked checked, kept or served (licences)."""


@dataclass(frozen=True, slots=True)
class Tiers:
    """Where answers are kept, fastest first (any may be absent)."""

    memory: MemoryCache | None
    store: ArtifactStore | None
    shared: SharedTier | None
    bucket: BucketTier | None = None  # behind the store
    bucket_access: BucketAccess | None = None  # the bucket's last access, in Redis

    def remember(self, key: str, entry: Entry, now: float) -> None:
        if self.memory is not None:
            self.memory.put(key, entry, now)


class Keeper:
    """Puts fetched answers into the tiers that may keep them."""

    def __init__(
        self,
        tiers: Tiers,
        cfg: Cache,
        metrics: Metrics,
        tasks: TaskGroup,
        clock: Callable[[], float],
        *,
        rollouts: Rollouts | None = None,
        inspect: Inspect | None = None,
    ) -> None:
        self.tiers = tiers
        self.cfg = cfg
        self.metrics = metrics
        self.tasks = tasks
        self.clock = clock
        self.rollouts = rollouts
        self.inspect = inspect

    def answer(self, job: Job, key: str, result: UpstreamAnswer | Failure) -> None:
        """Keep an answer read whole (or a failure, when its lifetime says so)."""
        now = self.clock()
        entry = _entry(job, result, self.cfg, now)
        if entry is None:
            return
        tiers = self.tiers
        tiers.remember(key, entry, now)
        small = job.request.kind is not Kind.ZIP
        if tiers.shared is not None and small and keeps(self.metrics, job.admission, "redis"):
            ttl = redis_ttl(entry, now)
            self.tasks.spawn(tiers.shared.put(key, entry, ttl), name="cache-share")
        if (
            tiers.store is not None
            and job.request.immutable
            and entry.status == 200
            and small  # zips are committed by `zip`
            and keeps(self.metrics, job.admission, "disk")
        ):
            self.tasks.spawn(self._on_disk(key, entry), name="store-put")

    async def _on_disk(self, key: str, entry: Entry) -> None:
        """Write an immutable answer to the store, unless its upstream was rolled back
        meanwhile (the rollback's drop may already have run)."""
        store = self.tiers.store
        assert store is not None
        await store.put_bytes(
            key,
            entry.body,
            content_type=entry.content_type,
            upstream=entry.upstream,
            module=entry.module,
        )
        if self.rollouts is not None and self.rollouts.rolled_back(entry.upstream):
            store.forget(key)

    async def zip(self, job: Job, key: str, tee: Tee, *, checked: bool = False) -> None:
        """Check a whole spooled zip by Go's rules and keep it (store, or memory when
        small); a zip that breaks them is counted and never kept. `checked`: proven by
        its checksum already."""
        req = job.request
        spool = tee.spool
        assert isinstance(req, ModuleRequest) and req.version is not None and spool is not None
        if not checked:
            spool.close(sync=False)
            tee.problem = await asyncio.to_thread(
                check_module_zip, spool.path, req.module, req.version
            )
            if tee.problem is None and self.inspect is not None:
                await self.inspect(req.module, req.version, spool.path)
            tee.checked.set()
            if tee.problem is not None:
                self.metrics.bad_zips.labels(tee.upstream, tee.problem.cause).inc()
                log.warning(
                    "upstream %s served a zip for %s@%s that breaks Go's rules (%s): not kept",
                    tee.upstream,
                    req.module,
                    req.version,
                    tee.problem.message,
                )
                return
        elif self.inspect is not None:
            await self.inspect(req.module, req.version, spool.path)
            tee.checked.set()  # proven by its checksum, and looked at
        store, memory = self.tiers.store, self.tiers.memory
        if store is not None and keeps(self.metrics, job.admission, "disk"):
            art = await store.commit(
                spool,
                key,
                content_type=tee.content_type,
                upstream=tee.upstream,
                module=req.module,
                expected_size=tee.written,
                checked=True,
            )
            tee.kept = art is not None
            bucket = self.tiers.bucket
            if tee.kept and self.rollouts is not None and self.rollouts.rolled_back(tee.upstream):
                store.forget(key)  # its rollback's drop may already have run
            elif art is not None and bucket is not None and (kept := store.get(key)):
                bucket.publish(key, art, kept[1])  # once per fleet, once complete
        elif memory is not None and tee.written <= SMALL_ZIP:
            body = await asyncio.to_thread(spool.path.read_bytes)
            if hashlib.sha256(body).hexdigest() == spool.digest:
                answer = UpstreamAnswer(
                    tee.upstream, 200, tee.content_type, len(body), 0.0, body=body
                )
                self.answer(job, key, answer)

    def drop_upstream(self, upstream: str) -> None:
        """Forget what a rolled-back mirror served: answers it gave to requests that were
        not compared may differ from the baseline's too."""
        memory, store = self.tiers.memory, self.tiers.store
        dropped = memory.drop_upstream(upstream) if memory is not None else 0
        if store is not None:
            dropped += store.drop_upstream(upstream)
        log.warning("dropped %d cached answers served by %s", dropped, upstream)


def count(metrics: Metrics, job: Job, result: str) -> None:
    """What the caches made of `job` (hit, stale, miss...): in the metrics and its record."""
    metrics.cache_requests.labels(job.request.kind.value, result).inc()
    job.served.from_cache(result)


def _entry(job: Job, result: UpstreamAnswer | Failure, cfg: Cache, now: float) -> Entry | None:
    """The tier entry for an answer, or None when its lifetime is none (not kept)."""
    ctype: str | None
    if isinstance(result, Failure):
        status, ctype = result.status, "text/plain; charset=utf-8"
        body = (" ".join(result.reason.split())[:500] + "\n").encode()
    else:
        status, ctype, body = 200, result.content_type, result.body or b""
    life = lifetime(job.request, status, cfg)
    if life is None:
        return None
    return Entry(
        status=status,
        body=body,
        content_type=ctype,
        upstream=result.upstream or "",
        stored=now,
        fresh_until=now + life.fresh,
        stale_until=now + max(life.fresh, life.stale_if_error + life.fresh),
        module=job.request.module,
        mutable=not job.request.immutable or status != 200,
    )
