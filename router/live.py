"""Background loops that keep selection state alive: active probes and score gauges."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.observability import Metrics
    from router.rollouts import Rollouts
    from router.runtime import Live
    from router.serving.cache import AnswerCache
    from router.state.local import SelectionState
    from router.tasks import TaskGroup
    from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.live")


# Probes running at once, over all upstreams (each upstream has at most one series running).
PROBE_CONCURRENCY = 8
# How often the loop looks for upstreams due a probe (new ones are probed within this).
PROBE_TICK = 0.2


async def probe_loop(
    live: Live, selection: SelectionState, metrics: Metrics, tasks: TaskGroup
) -> None:
    """Probe what selection cannot measure from requests: every upstream at once at start
    and when a reload adds or changes one (FIRST_PROBES in a row, before RTT may rank it),
    then any upstream that has had no sample for `probe_interval` (one not chosen) and
    half-open ones. Upstreams are probed concurrently, at most PROBE_CONCURRENCY at once."""
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            rt = live.current
            interval = rt.rules.selection.probe_interval
            due = selection.probes_due(interval) if rt.rules.network != "offline" else {}
            for name, count in due.items():  # network: offline never contacts an upstream
                client = rt.clients.get(name)
                if client is None or name in running:
                    continue
                probe = _probe(selection, metrics, client, count, limit)
                task = tasks.spawn(probe, name=f"probe-{name}")
                running[name] = task
                task.add_done_callback(functools.partial(_forget, running, name))
            await asyncio.sleep(min(PROBE_TICK, interval))
    finally:
        for task in list(running.values()):
            task.cancel()


def _forget(running: dict[str, asyncio.Task[None]], name: str, _task: object) -> None:
    running.pop(name, None)


async def _probe(
    selection: SelectionState,
    metrics: Metrics,
    client: UpstreamClient,
    count: int,
    limit: asyncio.Semaphore,
) -> None:
    """`count` probes of one upstream in a row, each reported to selection as it ends."""
    for _ in range(count):
        async with limit:
            try:
                ok, seconds = await client.probe()
            except Exception as exc:  # a probe must never end the series or the loop
                log.warning("probe of %s failed: %r", client.name, exc)
                ok, seconds = False, None
        selection.probed(client.name, ok=ok, rtt=seconds)
        metrics.probes.labels(client.name, "ok" if ok else "failed").inc()


async def gauge_loop(
    live: Live,
    selection: SelectionState,
    metrics: Metrics,
    rollouts: Rollouts,
    answers: AnswerCache,
    interval: float = 1.0,
) -> None:
    """Export the live RTT, cost, ejection and score components as gauges."""
    evictions: dict[str, int] = {}  # the tiers' running totals already counted
    while True:
        update_gauges(live, selection, metrics, rollouts, answers, evictions)
        await asyncio.sleep(interval)


def update_gauges(
    live: Live,
    selection: SelectionState,
    metrics: Metrics,
    rollouts: Rollouts,
    answers: AnswerCache,
    evictions: dict[str, int],
) -> None:
    sel, m = selection, metrics
    rules = live.current.rules
    now = sel.now()
    rollouts.update_gauges()  # comparing turns healthy with time alone
    for name in sel.names():
        rtt = sel.rtt(name)
        if rtt is not None:
            m.upstream_rtt.labels(name).set(rtt)
        m.upstream_cost.labels(name).set(sel.cost(name))
        ejected = sel.live(name).health.state(now) == "ejected"
        m.upstream_ejected.labels(name).set(1 if ejected else 0)
    memory, store = answers.tiers.memory, answers.tiers.store
    if memory is not None:
        m.cache_entries.labels("memory").set(len(memory))
        m.cache_bytes.labels("memory").set(memory.used_bytes)
        _count_up(m.cache_evictions.labels("memory"), memory.evictions, evictions, "memory")
    if store is not None:
        m.cache_entries.labels("disk").set(len(store))
        m.cache_bytes.labels("disk").set(store.used_bytes)
        _count_up(m.cache_evictions.labels("disk"), store.evictions, evictions, "disk")
    for pool in rules.pools:
        ups = [rules.upstream(n) for n in pool.upstreams]
        for scored in sel.scored(ups, None):
            name = scored.candidate.name
            m.upstream_score.labels(pool.name, name, "rtt").set(scored.rtt_term)
            m.upstream_score.labels(pool.name, name, "cost").set(scored.cost_term)
            m.upstream_score.labels(pool.name, name, "total").set(scored.score)


def _count_up(counter: Any, total: int, seen: dict[str, int], tier: str) -> None:
    """Advance a counter to a running total kept elsewhere."""
    before = seen.get(tier, 0)
    if total > before:
        counter.inc(total - before)
        seen[tier] = total
