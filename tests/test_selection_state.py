"""Selection state on an injected clock: what probes, answers and zips teach it, and the
acceptance scenarios of the selection issue replayed without a network.

Each scenario drives `SelectionState` as the gateway does: the probe loop asks
`probes_due` and reports `probed`; every finished request reports `observe` per
attempt and `served`. Time only moves when the test moves it."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from support.clock import Clock

from router.core.model import Pool, Rules, Selection, Upstream
from router.state.local import FIRST_PROBES, SelectionState


def _rules(*names: str, mode: str = "best", probe_interval: float = 10.0) -> Rules:
    ups = tuple(Upstream(n, f"https://{n}.example", cost_per_gb=0.01) for n in names)
    return Rules(
        upstreams=ups,
        pools=(Pool("main", names),),
        selection=Selection(mode=mode, probe_interval=probe_interval),  # type: ignore[arg-type]
    )


def _state(rules: Rules, clock: Clock, seed: int = 1) -> SelectionState:
    return SelectionState(rules, clock=clock, rng=random.Random(seed))


def _first(state: SelectionState, module: str | None = None) -> str:
    return state.order(list(state.rules.upstreams), module)[0].candidate.name


def _probe_all(state: SelectionState, clock: Clock, ttfb: dict[str, float]) -> None:
    """What the probe loop does on one tick: every due upstream, its probes in a row."""
    for name, count in state.probes_due(state.rules.selection.probe_interval).items():
        for _ in range(count):
            clock.now += 0.001
            state.probed(name, ok=True, rtt=ttfb[name])


class Gateway:
    """Sequential requests against simulated upstreams, probes in between, as the gateway
    runs them; `delay` is what each upstream adds to every answer (probes included)."""

    def __init__(self, state: SelectionState, clock: Clock, delay: dict[str, float]) -> None:
        self.state, self.clock, self.delay = state, clock, delay
        self.next_probe_tick = clock.now
        self.n = 0

    def ttfb(self, name: str) -> float:
        return 0.002 + self.delay[name]

    def request(self) -> str:
        if self.clock.now >= self.next_probe_tick:
            _probe_all(self.state, self.clock, {n: self.ttfb(n) for n in self.delay})
            self.next_probe_tick = self.clock.now + 0.2
        self.n += 1
        module = f"example.com/m{self.n}"  # distinct modules: no heat carries over
        name = _first(self.state, module)
        took = self.ttfb(name)
        self.clock.now += took
        self.state.observe(name, failed=False, rtt=took)
        self.state.served(name, module, 300)
        return name

    def run(self, seconds: float) -> Counter[str]:
        end = self.clock.now + seconds
        got: Counter[str] = Counter()
        while self.clock.now < end:
            got[self.request()] += 1
        return got


# ------------------------------------------------------------------ probes


def test_every_upstream_is_owed_first_probes_and_then_only_the_quiet_ones() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b"), clock)
    assert state.probes_due(10.0) == {"a": FIRST_PROBES, "b": FIRST_PROBES}
    assert sorted(state.unmeasured()) == ["a", "b"]
    _probe_all(state, clock, {"a": 0.05, "b": 0.01})
    assert state.probes_due(10.0) == {} and state.unmeasured() == []
    clock.now += 5.0
    state.observe("b", failed=False, rtt=0.01)  # b is chosen: requests measure it
    clock.now += 5.0
    assert state.probes_due(10.0) == {"a": 1}  # a is not: a probe keeps it measured


def test_the_first_probe_back_does_not_decide_before_the_others() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("official", "mirror"), clock)
    clock.now += 0.05
    state.probed("mirror", ok=True, rtt=0.002)  # the mirror's first probe came back first
    assert _first(state) == "official"  # cold until every upstream has a first sample
    state.probed("official", ok=True, rtt=0.003)
    assert _first(state) == "official"  # comparable: the pool's order
    clock.now += 0.2
    state.probed("official", ok=True, rtt=0.120)
    state.probed("official", ok=True, rtt=0.120)
    assert _first(state) == "mirror"


def test_an_upstream_whose_first_probes_hang_is_ranked_after_a_second() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("hangs", "fine"), clock)
    state.probed("fine", ok=True, rtt=0.01)
    assert _first(state) == "hangs"  # cold: the pool's order while it is being measured
    clock.now += 1.0
    assert _first(state) == "fine"  # unmeasured: after the measured (seed 1 does not explore)


def test_a_failed_probe_is_not_repeated_before_the_interval() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a"), clock)
    for _ in range(FIRST_PROBES):
        state.probed("a", ok=False, rtt=None)
    assert state.probes_due(10.0) == {} and state.unmeasured() == ["a"]
    clock.now += 9.9
    assert state.probes_due(10.0) == {}
    clock.now += 0.1
    assert state.probes_due(10.0) == {"a": 1}


def test_a_half_open_upstream_is_probed_as_soon_as_its_ejection_ends() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b"), clock)
    _probe_all(state, clock, {"a": 0.01, "b": 0.01})
    for _ in range(5):
        state.observe("a", failed=True, rtt=None)
    assert state.live("a").health.state(clock.now) == "ejected"
    assert "a" not in state.probes_due(100.0)
    clock.now = state.live("a").health.ejected_until + 0.01
    assert state.probes_due(100.0) == {"a": 1}
    state.probed("a", ok=True, rtt=0.01)
    assert state.live("a").health.state(clock.now) == "healthy"


def test_a_reload_that_adds_or_moves_an_upstream_has_it_measured_again() -> None:
    clock = Clock(1000.0)
    rules = _rules("a", "b")
    state = _state(rules, clock)
    _probe_all(state, clock, {"a": 0.01, "b": 0.02})
    moved = replace(rules.upstreams[1], url="https://elsewhere.example")
    added = Upstream("c", "https://c.example")
    state.apply_rules(
        replace(rules, upstreams=(rules.upstreams[0], moved, added), pools=(Pool("m", ("a",)),))
    )
    assert state.probes_due(10.0) == {"b": FIRST_PROBES, "c": FIRST_PROBES}
    assert state.rtt("a") == pytest.approx(0.01) and state.rtt("b") is None  # b: another server
    state.apply_rules(replace(rules, upstreams=(rules.upstreams[0],), pools=(Pool("m", ("a",)),)))
    assert state.names() == ["a"] and state.probes_due(10.0) == {}


# ------------------------------------------------------------------ what answers teach


def test_a_quick_error_is_no_evidence_of_speed_but_a_timeout_is_of_slowness() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a"), clock)
    state.observe("a", failed=True, rtt=0.001)  # a fast 500 before any sample
    assert state.rtt("a") is None
    state.observe("a", failed=False, rtt=0.050)
    state.observe("a", failed=True, rtt=0.001)
    assert state.rtt("a") == pytest.approx(0.050)
    clock.now += 30
    state.observe("a", failed=True, rtt=10.0)  # waited for a first byte that never came
    assert state.rtt("a") == pytest.approx(10.0)


def test_zips_teach_bandwidth_and_small_ones_teach_nothing() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a"), clock)
    state.transferred("a", 10_000, 0.5)
    assert state.live("a").bandwidth.value is None
    state.transferred("a", 4_000_000, 0.5)
    assert state.live("a").bandwidth.value == pytest.approx(8e6)
    assert state.rtt("a") is None  # and no RTT: the gateway reports a zip's rtt as None


def test_a_module_slow_everywhere_does_not_make_its_upstream_look_slow() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b"), clock)
    _probe_all(state, clock, {"a": 0.004, "b": 0.006})
    for i in range(200):
        clock.now += 0.05
        slow_module = i % 7 == 3  # one module in seven takes 2 s wherever it is asked
        state.observe("a", failed=False, rtt=2.0 if slow_module else 0.004)
        assert _first(state) == "a", i


def test_heat_does_not_keep_a_slowed_upstream_first_for_its_hot_modules() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b"), clock)
    _probe_all(state, clock, {"a": 0.002, "b": 0.002})
    for _ in range(50):
        state.served("a", "example.com/hot", 1000)
    assert _first(state, "example.com/hot") == "a"
    for _ in range(FIRST_PROBES * 3):
        clock.now += 0.1
        state.observe("a", failed=False, rtt=0.102)
    view = {
        s.candidate.name: s for s in state.order(list(state.rules.upstreams), "example.com/hot")
    }
    assert view["a"].heat_term == 1.0 and not view["a"].heat_counts
    assert _first(state, "example.com/hot") == "b"


# ------------------------------------------------------------------ acceptance scenarios


def test_cold_start_the_fast_upstream_serves_after_the_first_probes() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("slow", "fast"), clock)
    assert _first(state) == "slow"  # before any probe: cold, the pool's order
    gw = Gateway(state, clock, {"slow": 0.120, "fast": 0.0})
    served = [gw.request() for _ in range(90)]
    assert served == ["fast"] * 90  # the first probes come before the first request


def test_a_slowed_upstream_loses_its_traffic_within_a_second() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b"), clock)
    gw = Gateway(state, clock, {"a": 0.0, "b": 0.0})
    assert gw.run(2.0)["a"] > 100  # comparable: the pool's order, a first
    gw.delay["a"] = 0.100
    first_second = gw.run(1.0)
    assert first_second["a"] <= 10
    assert gw.run(4.0)["a"] == 0


def test_a_recovered_upstream_wins_its_traffic_back_after_one_quiet_probe() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b", probe_interval=10.0), clock)
    gw = Gateway(state, clock, {"a": 0.0, "b": 0.0})
    gw.run(2.0)
    gw.delay["a"] = 0.100
    assert gw.run(60.0)["a"] <= 10
    gw.delay["a"] = 0.0
    assert gw.run(10.0 + 0.5)["a"] > 0  # the next probe (at most probe_interval) sees it
    after = gw.run(5.0)
    assert after == Counter({"a": after.total()})


def test_weighted_mode_spreads_comparable_upstreams_and_drops_a_slowed_one() -> None:
    clock = Clock(1000.0)
    state = _state(_rules("a", "b", mode="weighted"), clock, seed=5)
    gw = Gateway(state, clock, {"a": 0.0, "b": 0.0})
    before = gw.run(2.0)
    assert min(before.values()) > 0.3 * before.total()  # no herding
    gw.delay["a"] = 0.100
    gw.run(1.0)
    assert gw.run(4.0)["a"] == 0
