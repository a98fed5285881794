"""The composition root: every service of the gateway, built once from the first rules.

`build` makes each service and hands it what it needs; the result is frozen. What
changes while the gateway runs is `Live` alone (the current `Runtime`, swapped whole on
reload, and readiness); what each rule set changes in a service it applies itself
(`apply_rules`). `start` and `stop` are the asynchronous halves, run around the
application's life: the first runtime, the tiers opened, the databases loaded, the
background loops. `router.app` puts each service under its typed key
(`router.appkeys`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.cachesetup import build_cache, start_cache
from router.checksums import ChecksumRegistry
from router.core.model import Rules
from router.core.protocol import ModuleRequest, SumdbRequest, parse_request_target
from router.fleet.client import connect
from router.fleet.limits import LimitSync
from router.fleet.rollouts import sync_loop as rollout_sync
from router.fleet.selection import RedisSync
from router.jobviews import JobViews, build_job_views
from router.licenses import DetectionStore
from router.limiting import RequestLimits, StreamSlots
from router.live import gauge_loop, probe_loop
from router.logs import AccessLog
from router.observability import Metrics
from router.padding import NotFoundTimer
from router.policing import PolicyEnforcer
from router.policygate import PolicyGate
from router.reload import Reloader
from router.rollouts import Rollouts
from router.runtime import ConnectionCounter, Live, UpstreamFactory, build_runtime
from router.serving.cache import AnswerCache
from router.state.local import SelectionState
from router.tasks import TaskGroup
from router.tracing import Tracer, make_tracer
from router.upstream import UpstreamClient

PARSED_TARGETS = 16384  # request targets whose parse is remembered (valid ones only)


@dataclass(frozen=True, slots=True)
class Services:
    """What the gateway is made of. Built once; none of its fields is ever replaced."""

    rules: Rules  # the first rules (later ones are `live.current.rules`)
    live: Live
    make_client: UpstreamFactory
    count_connection: ConnectionCounter
    redis_url: str | None
    redis: Any | None  # the Redis client, when there is one
    tasks: TaskGroup
    metrics: Metrics
    parse: Callable[[str], ModuleRequest | SumdbRequest]
    not_found_timer: NotFoundTimer
    selection: SelectionState
    limits: RequestLimits
    streams: StreamSlots
    access_log: AccessLog
    checksums: ChecksumRegistry
    rollouts: Rollouts
    policy: PolicyGate
    answers: AnswerCache
    jobs: JobViews
    tracer: Tracer
    redis_sync: RedisSync | None
    reloader: Reloader | None


def build(
    rules: Rules,
    *,
    rules_paths: tuple[Path, ...] = (),
    redis_url: str | None = None,
    clock: Callable[[], float] = time.time,
    make_client: UpstreamFactory = UpstreamClient,
) -> Services:
    """Every service for a validated rule set (state shared through Redis when a
    Redis URL is given here or in the rules). Nothing is contacted yet."""
    metrics = Metrics()
    tasks = TaskGroup()
    live = Live()
    count_connection = functools.partial(_count_connection, metrics)
    selection = SelectionState(rules, clock=clock)
    limits = RequestLimits(metrics, clock)
    limits.apply_rules(rules)
    rollouts = Rollouts(metrics)
    rollouts.apply_rules(rules)
    checksums = ChecksumRegistry(metrics, count_connection)
    redis_url = redis_url or rules.redis
    redis = connect(redis_url) if redis_url else None
    cache_dir = rules.cache.dir
    detections = DetectionStore(Path(cache_dir) / "licences") if cache_dir else None
    policy = PolicyGate(PolicyEnforcer(rules, store=detections, metrics=metrics))
    jobs = build_job_views(rules.jobs, metrics, redis, clock)
    answers = build_cache(
        rules, metrics, tasks, redis, clock=clock, rollouts=rollouts, inspect=policy.inspect
    )
    access_log = AccessLog(
        enabled=rules.logging.access,
        sample=rules.logging.sample,
        on_drop=metrics.access_log_dropped.inc,
    )
    reloader = None
    if rules_paths:
        reloader = Reloader(
            rules_paths,
            started=rules,
            live=live,
            metrics=metrics,
            tasks=tasks,
            selection=selection,
            limits=limits,
            rollouts=rollouts,
            checksums=checksums,
            policy=policy,
            jobs=jobs,
            answers=answers,
            access_log=access_log,
            count_connection=count_connection,
            make_client=make_client,
        )
    return Services(
        rules=rules,
        live=live,
        make_client=make_client,
        count_connection=count_connection,
        redis_url=redis_url,
        redis=redis,
        tasks=tasks,
        metrics=metrics,
        # Parsing is pure but validating Go module paths is not cheap.
        parse=functools.lru_cache(maxsize=PARSED_TARGETS)(parse_request_target),
        not_found_timer=NotFoundTimer(),
        selection=selection,
        limits=limits,
        streams=StreamSlots(),
        access_log=access_log,
        checksums=checksums,
        rollouts=rollouts,
        policy=policy,
        answers=answers,
        jobs=jobs,
        tracer=make_tracer(rules.tracing),
        redis_sync=RedisSync(redis, selection, metrics) if redis is not None else None,
        reloader=reloader,
    )


def _count_connection(metrics: Metrics, upstream: str, event: str) -> None:
    metrics.connections.labels(upstream, event).inc()


async def start(svc: Services) -> None:
    """The first runtime, the tiers opened, the vulnerability databases loaded (a policy
    never judges without them), every background loop; then ready."""
    live, tasks, rules = svc.live, svc.tasks, svc.rules
    live.runtime, _ = await build_runtime(rules, 1, None, svc.count_connection, svc.make_client)
    await svc.checksums.apply(rules)
    svc.metrics.rules_generation.set(1)
    if svc.reloader is not None:
        tasks.spawn(svc.reloader.watch(), name="rules-watch")
    if svc.redis_sync is not None:
        tasks.spawn(svc.redis_sync.run(), name="redis-sync")
        limit_sync = LimitSync(svc.redis, svc.limits, svc.redis_sync.replica)
        tasks.spawn(limit_sync.run(svc.metrics), name="limit-sync")
        tasks.spawn(rollout_sync(svc.rollouts, svc.redis), name="rollout-sync")
    await start_cache(svc.answers, tasks, svc.redis_url)
    tasks.spawn(svc.jobs.run(), name="job-gc")
    enforcer = svc.policy.enforcer
    await asyncio.to_thread(enforcer.databases.refresh_all)
    tasks.spawn(enforcer.run(), name="policy-vulndb")
    tasks.spawn(probe_loop(live, svc.selection, svc.metrics, tasks), name="probes")
    gauges = gauge_loop(live, svc.selection, svc.metrics, svc.rollouts, svc.answers)
    tasks.spawn(gauges, name="gauges")
    live.ready = True


async def stop(svc: Services) -> None:
    """Unready, the access log flushed, writes that must land finished, all closed."""
    svc.live.ready = False
    svc.access_log.flush()
    await svc.tasks.close(finish=("store-", "cache-share"))
    await svc.answers.close()
    svc.tracer.shutdown()
    svc.policy.enforcer.close()
    await svc.checksums.close()
    if svc.redis is not None:
        await svc.redis.aclose()
    if svc.live.runtime is not None:
        for client in svc.live.runtime.clients.values():
            await client.close()
