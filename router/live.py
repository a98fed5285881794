"""Background loops that keep selection state alive: active probes and score gauges."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.app import GatewayState
    from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.live")


# Probes running at once, over all upstreams (each upstream has at most one series running).
PROBE_CONCURRENCY = 8
# How often the loop looks for upstreams due a probe (new ones are probed within this).
PROBE_TICK = 0.2


async def probe_loop(state: GatewayState) -> None:
    """Probe what selection cannot measure from requests: every upstream at once at start
    and when a reload adds or changes one (FIRST_PROBES in a row, before RTT may rank it),
    then any upstream that has had no sample for `probe_interval` (one not chosen) and
    half-open ones. Upstreams are probed concurrently, at most PROBE_CONCURRENCY at once."""
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            rt = state.current
            interval = rt.rules.selection.probe_interval
            due = state.selection.probes_due(interval) if rt.rules.network != "offline" else {}
            for name, count in due.items():  # network: offline never contacts an upstream
                client = rt.clients.get(name)
                if client is None or name in running:
                    continue
                task = state.tasks.spawn(_probe(state, client, count, limit), name=f"probe-{name}")
                running[name] = task
                task.add_done_callback(functools.partial(_forget, running, name))
            await asyncio.sleep(min(PROBE_TICK, interval))
    finally:
        for task in list(running.values()):
            task.cancel()


def _forget(running: dict[str, asyncio.Task[None]], name: str, _task: object) -> None:
    running.pop(name, None)


async def _probe(
    state: GatewayState, client: UpstreamClient, count: int, limit: asyncio.Semaphore
) -> None:
    """`count` probes of one upstream in a row, each reported to selection as it ends."""
    for _ in range(count):
        async with limit:
            try:
                ok, seconds = await client.probe()
            except Exception as exc:  # a probe must never end the series or the loop
                log.warning("probe of %s failed: %r", client.name, exc)
                ok, seconds = False, None
        state.selection.probed(client.name, ok=ok, rtt=seconds)
        state.metrics.probes.labels(client.name, "ok" if ok else "failed").inc()


async def gauge_loop(state: GatewayState, interval: float = 1.0) -> None:
    """Export the live RTT, cost, ejection and score components as gauges."""
    while True:
        update_gauges(state)
        await asyncio.sleep(interval)


def update_gauges(state: GatewayState) -> None:
    sel, m = state.selection, state.metrics
    rules = state.current.rules
    now = sel.now()
    state.rollouts.update_gauges()  # comparing turns healthy with time alone
    for name in sel.names():
        rtt = sel.rtt(name)
        if rtt is not None:
            m.upstream_rtt.labels(name).set(rtt)
        m.upstream_cost.labels(name).set(sel.cost(name))
        ejected = sel.live(name).health.state(now) == "ejected"
        m.upstream_ejected.labels(name).set(1 if ejected else 0)
    answers = state.answers
    if answers is not None and answers.memory is not None:
        m.cache_entries.labels("memory").set(len(answers.memory))
        m.cache_bytes.labels("memory").set(answers.memory.used_bytes)
        _count_up(m.cache_evictions.labels("memory"), answers.memory.evictions, state, "memory")
    if answers is not None and answers.store is not None:
        m.cache_entries.labels("disk").set(len(answers.store))
        m.cache_bytes.labels("disk").set(answers.store.used_bytes)
        _count_up(m.cache_evictions.labels("disk"), answers.store.evictions, state, "disk")
    for pool in rules.pools:
        ups = [rules.upstream(n) for n in pool.upstreams]
        for scored in sel.scored(ups, None):
            name = scored.candidate.name
            m.upstream_score.labels(pool.name, name, "rtt").set(scored.rtt_term)
            m.upstream_score.labels(pool.name, name, "cost").set(scored.cost_term)
            m.upstream_score.labels(pool.name, name, "total").set(scored.score)


def _count_up(counter: Any, total: int, state: GatewayState, tier: str) -> None:
    """Advance a counter to a running total kept elsewhere."""
    seen = state.eviction_totals.get(tier, 0)
    if total > seen:
        counter.inc(total - seen)
        state.eviction_totals[tier] = total
