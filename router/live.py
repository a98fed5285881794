"""Background loops that keep selection state alive: active probes and score gauges."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.app import GatewayState

log = logging.getLogger("goproxy_router.live")


async def probe_loop(state: GatewayState) -> None:
    """Probe idle or half-open upstreams so a recovered or unused one gets measured."""
    while True:
        interval = state.current.rules.selection.probe_interval
        await asyncio.sleep(interval)
        rt = state.current
        due = [c for name, c in rt.clients.items() if state.selection.idle(name, interval)]
        results = await asyncio.gather(*(c.probe() for c in due), return_exceptions=True)
        for client, result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("probe of %s failed: %r", client.name, result)
                continue
            ok, seconds = result
            state.selection.observe(client.name, failed=not ok, rtt=seconds)
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
