"""Building the cache tiers from the rules at startup (and the purge listener)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cache.disk import ArtifactStore, SpoolBudget
from router.cache.health import StorageHealth
from router.cache.memory import MemoryCache
from router.cache.policy import CachePolicy, LRUKPolicy
from router.cache.shared import Breaker, SharedTier
from router.core.model import Cache, Rules
from router.fleet.client import connect
from router.fleet.purge import listen_for_purges
from router.observability import Metrics
from router.serving.cache import AnswerCache, new_owner
from router.serving.keeping import Inspect, Tiers
from router.spooling import Spools
from router.tasks import TaskGroup

if TYPE_CHECKING:
    from router.rollouts import Rollouts

log = logging.getLogger("goproxy_router.cachesetup")

AVERAGE_ENTRY = 2048  # bytes; caps the entry count at memory / this


def make_policy(cfg: Cache) -> CachePolicy:
    """The eviction policy: LRU-K with time decay (see benchmarks/CACHE.md)."""
    max_entries = max(16, cfg.memory // AVERAGE_ENTRY)
    return LRUKPolicy(cfg.memory, max_entries, k=cfg.k, decay=cfg.decay, crp=cfg.crp)


def storage_health(metrics: Metrics) -> StorageHealth:
    """Storage failures counted and shown as degraded on `metrics`."""
    return StorageHealth(
        on_error=lambda tier, cause: metrics.storage_errors.labels(tier, cause).inc(),
        on_state=lambda tier, bad: metrics.storage_degraded.labels(tier).set(1 if bad else 0),
    )


def build_cache(
    rules: Rules,
    metrics: Metrics,
    tasks: TaskGroup,
    redis_client: Any,
    *,
    clock: Callable[[], float],
    rollouts: Rollouts,
    inspect: Inspect,
) -> AnswerCache:
    """The cache tiers the rules ask for (none at all with memory 0 and no dir: then
    only coalescing, verification spools and rollout comparisons remain). Nothing is
    read or written yet: `start_cache` opens them."""
    cfg = rules.cache
    memory = MemoryCache(make_policy(cfg)) if cfg.memory > 0 else None
    health = storage_health(metrics)
    store = ArtifactStore(Path(cfg.dir), cfg.disk, health=health) if cfg.dir else None
    shared = None
    if redis_client is not None and (memory is not None or store is not None):
        errors, gauge = metrics.redis_errors, metrics.redis_breaker_open
        breaker = Breaker(lambda is_open: gauge.set(1 if is_open else 0))
        shared = SharedTier(
            redis_client, on_error=lambda op: errors.labels(op).inc(), breaker=breaker
        )
    spools = Spools(SpoolBudget(cfg.spool, store), health, store=store)
    owner = new_owner()
    bucket, access = None, None
    if cfg.bucket is not None and store is not None:
        # the object-storage tier behind the store (docs/bucket.md); needs the s3 extra,
        # which `validate` has checked is installed. With Redis, the keys read from the
        # bucket get their last access recorded there (for `store gc --bucket`).
        from router.cache.bucket_tier import BucketTier
        from router.retention import BucketAccess

        bucket = BucketTier(
            cfg.bucket, store=store, spools=spools, metrics=metrics, shared=shared, owner=owner
        )
        access = BucketAccess(redis_client) if redis_client is not None else None
    return AnswerCache(
        cfg,
        metrics,
        tasks,
        Tiers(memory, store, shared, bucket, access),
        spools=spools,
        stall=rules.server.stall_timeout,
        clock=clock,
        owner=owner,
        rollouts=rollouts,
        inspect=inspect,
    )


async def start_cache(answers: AnswerCache, tasks: TaskGroup, redis_url: str | None) -> None:
    """Open the tiers: load the store's index, clear old spools, make the bucket's
    client; then the loops that watch Redis and the bucket, and the purge listener."""
    tiers = answers.tiers
    store, memory, shared, bucket = tiers.store, tiers.memory, tiers.shared, tiers.bucket
    if store is not None:
        await asyncio.to_thread(store.open)
        log.info(
            "artifact store %s: %d artifacts, %d bytes", store.root, len(store), store.used_bytes
        )
    if shared is not None:
        tasks.spawn(shared.watch(), name="redis-breaker")
        if redis_url:
            listener = connect(redis_url, socket_timeout=None)

            def apply(module: str) -> None:
                if memory is not None:
                    dropped = memory.purge(module)
                    log.info("purge %s: %d entries dropped", module, dropped)

            tasks.spawn(listen_for_purges(listener, apply), name="purge-listener")
    await asyncio.to_thread(answers.spools.prepare)
    if bucket is not None:
        await bucket.start()
        tasks.spawn(bucket.watch(), name="bucket-gauge")
        log.info("bucket tier %s (serve: %s)", bucket.config.url, bucket.config.serve)
