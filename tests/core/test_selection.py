"""Scoring and ranking of upstreams, on injected time and randomness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.core.selection import (
    Candidate,
    EjectionPolicy,
    Health,
    HeatWindow,
    PeakEwma,
    Weights,
    rank,
    score,
)


def test_peak_ewma_jumps_up_and_decays_slowly() -> None:
    e = PeakEwma(tau=10.0)
    e.observe(0.010, 0.0)
    e.observe(0.110, 1.0)
    assert e.value == pytest.approx(0.110)  # a slowdown shows at once
    e.observe(0.010, 2.0)
    assert e.value == pytest.approx(0.010 + 0.100 * 2.718281828**-0.1, rel=1e-3)
    for t in range(3, 60):
        e.observe(0.010, float(t))
    assert e.value == pytest.approx(0.010, abs=0.002)  # and recovers


def test_score_normalises_every_term() -> None:
    cands = [
        Candidate("a", rtt=0.010, cost=0.09, heat=10),
        Candidate("b", rtt=0.110, cost=0.00, heat=0),
        Candidate("c", rtt=None, cost=0.05, heat=5),
    ]
    s = {x.candidate.name: x for x in score(cands, Weights())}
    assert s["a"].rtt_term == 1.0
    assert s["b"].rtt_term == pytest.approx(0.020 / 0.120)
    assert s["c"].rtt_term == pytest.approx(0.020 / 0.070)  # unmeasured: the median, not best
    assert s["b"].cost_term == 1.0
    assert s["a"].cost_term == pytest.approx(0.01 / 0.10)
    assert (s["a"].heat_term, s["b"].heat_term, s["c"].heat_term) == (1.0, 0.0, 0.5)
    a = s["a"]
    assert a.score == pytest.approx(0.40 * 1 + 0.35 * 0.1 + 0.25 * 1)


def test_nothing_measured_is_neutral() -> None:
    s = score([Candidate("a", None, 0, 0), Candidate("b", None, 0, 0)], Weights())
    assert [x.rtt_term for x in s] == [1.0, 1.0]
    assert [x.heat_term for x in s] == [0.0, 0.0]


def _scored(*cands: Candidate) -> list:  # type: ignore[type-arg]
    return score(list(cands), Weights())


def test_best_mode_orders_by_score_and_ejected_last() -> None:
    s = _scored(
        Candidate("slow", 0.5, 0, 0),
        Candidate("fast", 0.01, 0, 0),
        Candidate("dead", 0.001, 0, 0, health="ejected"),
        Candidate("maybe", 0.01, 0, 0, health="half-open"),
    )
    order = [x.candidate.name for x in rank(s, mode="best", rng=random.Random(1))]
    assert order == ["fast", "maybe", "slow", "dead"]  # the crawling one goes after half-open


def test_a_crawling_upstream_is_never_first_however_cheap_or_hot() -> None:
    s = _scored(
        Candidate("cheap-hot-slow", 9.0, 0.0, 100.0),
        Candidate("dear-cold-fast", 0.02, 0.09, 0.0),
    )
    assert s[0].score > s[1].score  # cost and heat outweigh a 0.4 rtt weight...
    for mode in ("best", "weighted"):
        order = rank(s, mode=mode, rng=random.Random(3))
        assert order[0].candidate.name == "dear-cold-fast"  # ...but not the slow guard


def test_ordered_mode_keeps_pool_order_but_healthy_first() -> None:
    s = _scored(
        Candidate("a", 0.5, 1, 0, health="ejected"),
        Candidate("b", 0.9, 1, 0),
        Candidate("c", 0.01, 0, 0),
    )
    assert [x.candidate.name for x in rank(s, mode="ordered", rng=random.Random(1))] == [
        "b",
        "c",
        "a",
    ]


def test_weighted_mode_spreads_among_near_best_only() -> None:
    s = _scored(
        Candidate("a", 0.010, 0, 0), Candidate("b", 0.011, 0, 0), Candidate("far", 0.3, 0, 0)
    )
    rng = random.Random(7)
    firsts = Counter(rank(s, mode="weighted", rng=rng)[0].candidate.name for _ in range(2000))
    assert firsts["far"] == 0
    assert 700 < firsts["a"] < 1300 and 700 < firsts["b"] < 1300  # no herding


def test_fresh_tiers_first_for_mutable_answers() -> None:
    s = score(
        [Candidate("cache", 0.001, 0, 0, tier="L2"), Candidate("origin", 0.2, 0.09, 0, tier="L0")],
        Weights(),
    )
    order = rank(s, mode="best", rng=random.Random(0), fresh_tiers=("L0", "L1"))
    assert [x.candidate.name for x in order] == ["origin", "cache"]


def test_ejection_after_consecutive_failures_then_half_open() -> None:
    policy = EjectionPolicy(consecutive_failures=5, base=30, max=300)
    h = Health()
    for i in range(4):
        assert not h.failure(float(i), policy)
    assert h.failure(4.0, policy)
    assert h.state(5.0) == "ejected" and h.state(33.9) == "ejected"
    assert h.state(34.1) == "half-open"
    assert h.failure(35.0, policy)  # one failure while half-open ejects again, for longer
    assert h.ejected_until == pytest.approx(35.0 + 60)
    assert h.state(96.0) == "half-open"
    h.success(96.0, policy)
    assert h.state(96.5) == "healthy"


def test_ejection_time_is_capped() -> None:
    policy = EjectionPolicy(consecutive_failures=1, base=30, max=100)
    h = Health()
    t = 0.0
    for _ in range(10):
        h.failure(t, policy)
        t = h.ejected_until + 0.1
    assert h.ejected_until - (t - 0.1 - 100) <= 100.1


def test_a_success_resets_the_failure_run() -> None:
    policy = EjectionPolicy(consecutive_failures=3)
    h = Health()
    h.failure(0, policy)
    h.failure(1, policy)
    h.success(2, policy)
    assert not h.failure(3, policy)


def test_heat_decays_over_the_window_and_stays_bounded() -> None:
    heat = HeatWindow(window=3600, buckets=12, top_n=100)
    for _ in range(10):
        heat.add("a", "m", 0.0)
    assert heat.heat("a", "m", 0.0) == 10
    assert heat.heat("a", "m", 1800.0) == pytest.approx(5.0)
    assert heat.heat("a", "m", 3600.0) == 0.0
    assert heat.heat("b", "m", 0.0) == 0.0
    for i in range(100_000):
        heat.add("a", f"mod{i}", float(i % 300))
    assert heat.size() <= 2 * 100 + 1
    heat.add("a", "old", 0.0)
    heat.add("a", "new", 4000.0)
    assert heat.heat("a", "old", 4000.0) == 0.0
