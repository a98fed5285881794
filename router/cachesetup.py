"""Building the cache tiers from the rules at startup (and the purge listener)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cache.disk import ArtifactStore, SpoolBudget
from router.cache.health import StorageHealth
from router.cache.memory import MemoryCache
from router.cache.policy import CachePolicy, LRUKPolicy
from router.cache.shared import Breaker, SharedTier
from router.core.model import Cache
from router.fleet.client import connect
from router.fleet.purge import listen_for_purges
from router.observability import Metrics
from router.serving.cache import AnswerCache
from router.spooling import Spools

if TYPE_CHECKING:
    from router.app import GatewayState

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


async def build_cache(state: GatewayState, redis_client: Any) -> AnswerCache:
    """The cache tiers the rules ask for (none at all with memory 0 and no dir: then
    only coalescing, verification spools and rollout comparisons remain)."""
    cfg = state.initial_rules.cache
    memory = MemoryCache(make_policy(cfg)) if cfg.memory > 0 else None
    health = storage_health(state.metrics)
    store = None
    if cfg.dir:
        store = ArtifactStore(Path(cfg.dir), cfg.disk, health=health)
        await asyncio.to_thread(store.open)
        log.info("artifact store %s: %d artifacts, %d bytes", cfg.dir, len(store), store.used_bytes)
    shared = None
    answers_ref: list[AnswerCache] = []
    if redis_client is not None and (memory is not None or store is not None):
        errors, gauge = state.metrics.redis_errors, state.metrics.redis_breaker_open
        breaker = Breaker(lambda is_open: gauge.set(1 if is_open else 0))
        shared = SharedTier(
            redis_client, on_error=lambda op: errors.labels(op).inc(), breaker=breaker
        )
        state.tasks.spawn(shared.watch(), name="redis-breaker")
        if state.redis_url:
            listener = connect(state.redis_url, socket_timeout=None)

            def apply(module: str) -> None:
                if answers_ref and answers_ref[0].memory is not None:
                    dropped = answers_ref[0].memory.purge(module)
                    log.info("purge %s: %d entries dropped", module, dropped)

            state.tasks.spawn(listen_for_purges(listener, apply), name="purge-listener")
    spools = Spools(SpoolBudget(cfg.spool, store), health, store=store)
    await asyncio.to_thread(spools.prepare)
    answers = AnswerCache(
        cfg,
        state.metrics,
        state.tasks,
        memory=memory,
        store=store,
        shared=shared,
        spools=spools,
        stall=state.initial_rules.server.stall_timeout,
        clock=state.clock,
    )
    if cfg.bucket is not None and store is not None:
        await attach_bucket(state, answers, store, spools, shared, redis_client)
    answers_ref.append(answers)
    return answers


async def attach_bucket(
    state: GatewayState,
    answers: AnswerCache,
    store: ArtifactStore,
    spools: Spools,
    shared: SharedTier | None,
    redis_client: Any = None,
) -> None:
    """The object-storage tier behind the store (docs/bucket.md); needs the s3 extra,
    which `validate` has checked is installed. With Redis, the keys read from the
    bucket get their last access recorded there (for `store gc --bucket`)."""
    from router.cache.bucket_tier import BucketTier
    from router.retention import BucketAccess

    cfg = state.initial_rules.cache.bucket
    assert cfg is not None
    tier = BucketTier(
        cfg, store=store, spools=spools, metrics=state.metrics, shared=shared, owner=answers.owner
    )
    await tier.start()
    state.tasks.spawn(tier.watch(), name="bucket-gauge")
    answers.bucket = tier
    if redis_client is not None:
        answers.bucket_access = BucketAccess(redis_client)
    log.info("bucket tier %s (serve: %s)", cfg.url, cfg.serve)
