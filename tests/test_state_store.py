"""One contract, every store: what one replica learns, the fleet ranks by.

`fleet` is either one process with embedded state (the writer is the reader)
or two replicas sharing a real Redis (observations flushed by one, pulled by
the other)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from router.core.model import Pool, Rules, Upstream
from router.fleet.client import connect
from router.fleet.keys import PREFIX
from router.fleet.selection import RedisSync, get_costs, set_cost
from router.observability import Metrics
from router.state.local import SelectionState

RULES = Rules(
    upstreams=(
        Upstream("x", "https://x.example", cost_per_gb=0.01),
        Upstream("y", "https://y.example", cost_per_gb=0.05),
    ),
    pools=(Pool("main", ("x", "y")),),
)


@dataclass
class Fleet:
    writer: SelectionState
    reader: SelectionState
    syncs: list[RedisSync]
    client: Any = None

    async def sync(self) -> None:
        for s in self.syncs:
            await s.flush()
        for s in self.syncs:
            await s.refresh()
            await s.refresh_heat()

    async def set_cost(self, name: str, value: float) -> None:
        if self.client is None:
            self.reader.cost_overrides[name] = value
        else:
            await set_cost(self.client, name, value)


@pytest.fixture(params=["memory", "redis"])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    if request.param == "memory":
        state = SelectionState(RULES)
        yield Fleet(state, state, [])
        return
    server = request.getfixturevalue("redis_server")
    client = connect(server.url)
    a, b = SelectionState(RULES), SelectionState(RULES)
    syncs = [
        RedisSync(connect(server.url), a, Metrics(), replica="a"),
        RedisSync(connect(server.url), b, Metrics(), replica="b"),
    ]
    try:
        yield Fleet(a, b, syncs, client)
    finally:
        for s in syncs:
            await s.client.aclose()
        await client.aclose()


def _order(state: SelectionState, module: str | None = None) -> list[str]:
    ups = list(RULES.upstreams)
    return [s.candidate.name for s in state.order(ups, module, mode="best")]


async def test_cost_override_flips_the_ranking(fleet: Fleet) -> None:
    assert _order(fleet.reader) == ["x", "y"]
    await fleet.set_cost("x", 1.0)
    await fleet.sync()
    assert fleet.reader.cost("x") == 1.0
    assert _order(fleet.reader) == ["y", "x"]


async def test_heat_learnt_by_one_ranks_for_all(fleet: Fleet) -> None:
    fleet.reader.weights = fleet.writer.weights = type(fleet.reader.weights)(0.0, 0.0, 1.0)
    for _ in range(20):
        fleet.writer.served("y", "example.com/hot", 1000)
    await fleet.sync()
    assert fleet.reader.heat.heat("y", "example.com/hot", fleet.reader.now()) >= 20
    assert _order(fleet.reader, "example.com/hot") == ["y", "x"]
    assert _order(fleet.reader, "example.com/cold") == ["x", "y"]


async def test_ejection_is_shared(fleet: Fleet) -> None:
    for _ in range(5):
        fleet.writer.observe("x", failed=True, rtt=None)
    await fleet.sync()
    assert fleet.reader.live("x").health.state(fleet.reader.now()) == "ejected"
    assert _order(fleet.reader) == ["y", "x"]


async def test_rtt_is_known_to_a_replica_that_never_measured(fleet: Fleet) -> None:
    fleet.writer.observe("x", failed=False, rtt=0.300)
    fleet.writer.observe("y", failed=False, rtt=0.010)
    await fleet.sync()
    assert fleet.reader.rtt("x") == pytest.approx(0.300)
    assert _order(fleet.reader)[0] == "y"


async def test_redis_keys_are_namespaced_and_bounded(redis_server: Any) -> None:
    state = SelectionState(RULES)
    sync = RedisSync(connect(redis_server.url), state, Metrics(), replica="r")
    try:
        for i in range(3000):
            state.served("x", f"example.com/m{i}", 1)
        await sync.flush()
        keys = [k.decode() for k in await sync.client.keys("*")]
        assert keys and all(k.startswith(PREFIX) for k in keys)
        heat_keys = [k for k in keys if ":heat:" in k]
        for key in heat_keys:
            assert await sync.client.zcard(key) <= 1024
            assert 0 < await sync.client.ttl(key) <= 3600 + 300
        await set_cost(sync.client, "y", 0.5)
        assert await get_costs(sync.client) == {"y": 0.5}
    finally:
        await sync.client.aclose()


async def test_redis_down_keeps_observations_for_later(redis_server: Any) -> None:
    state = SelectionState(RULES)
    sync = RedisSync(connect(redis_server.url), state, Metrics(), replica="r")
    try:
        redis_server.kill()
        state.served("x", "example.com/m", 1)
        with pytest.raises(Exception):  # noqa: B017 - the loop counts and backs off
            await sync.flush()
        assert state.pending_heat  # kept, bounded, for the next flush
        redis_server.start()
        await sync.flush()
        assert not state.pending_heat
    finally:
        await sync.client.aclose()
