"""Scoring and ranking of upstreams, on injected time, samples and randomness."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from router.core.selection import (
    EXPLORE_SHARE,
    SLOW_TERM,
    Candidate,
    DecayedMedian,
    EjectionPolicy,
    Health,
    HeatWindow,
    Scored,
    Weights,
    band,
    comparable,
    rank,
    score,
)


class Draws(random.Random):
    """An rng whose random() returns the given values in turn (and fails when asked for
    more): a test states exactly which draws a decision makes."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        assert self.values, "the decision drew from the rng more often than expected"
        return self.values.pop(0)


def _scored(*cands: Candidate, transfer: bool = False) -> list[Scored]:
    return score(list(cands), Weights(), transfer=transfer)


def _names(order: list[Scored]) -> list[str]:
    return [s.candidate.name for s in order]


# ------------------------------------------------------------------ the estimate


def test_one_slow_answer_among_recent_ones_does_not_move_the_estimate() -> None:
    e = DecayedMedian(tau=10.0)
    for i in range(10):
        e.observe(0.010, i * 0.1)
    e.observe(2.5, 1.0)  # a module slow everywhere, served by this upstream
    assert e.value == pytest.approx(0.010)
    e.observe(0.011, 1.1)
    assert e.value == pytest.approx(0.010)


def test_a_lasting_slowdown_shows_once_new_samples_outweigh_old_ones() -> None:
    e = DecayedMedian(tau=1.0)
    t = 0.0
    for _ in range(16):
        e.observe(0.002, t)
        t += 0.003
    slow_samples = 0
    while e.value is not None and e.value < 0.1:
        t += 0.1
        e.observe(0.102, t)
        slow_samples += 1
    assert slow_samples == 7  # tau 1 s, 16 samples: each slow one also drops a fast one


def test_after_silence_one_fresh_sample_outweighs_the_old_ones() -> None:
    e = DecayedMedian(tau=10.0)
    for k in range(8):  # slow probes every 10 s
        e.observe(0.101, 10.0 * k)
    e.observe(0.001, 80.0)  # the upstream recovered: the next probe is fast
    assert e.value == pytest.approx(0.001)


def test_weights_stay_finite_over_a_long_run() -> None:
    e = DecayedMedian(tau=1.0)
    for k in range(5000):  # 5000 tau: exp(5000) would overflow without moving the origin
        e.observe(0.020, float(k))
    e.observe(0.300, 5000.0)
    e.observe(0.300, 5000.1)
    assert e.value == pytest.approx(0.300)  # the two newest outweigh fourteen older ones


def test_the_estimate_keeps_a_bounded_window() -> None:
    e = DecayedMedian(tau=10.0, size=4)
    for i in range(100):
        e.observe(float(i), float(i))
    assert e.samples == 4
    e.reset()
    assert (e.value, e.samples) == (None, 0)


# ------------------------------------------------------------------ comparability


def test_comparable_means_within_25_percent_or_10_ms() -> None:
    assert band(0.001) == pytest.approx(0.010) and band(0.200) == pytest.approx(0.050)
    assert comparable(0.011, 0.001) and not comparable(0.0111, 0.001)
    assert comparable(0.125, 0.100) and not comparable(0.1251, 0.100)
    assert comparable(0.001, 0.100)  # faster is comparable too


def test_comparable_upstreams_are_as_fast_as_the_fastest() -> None:
    s = _scored(
        Candidate("a", 0.001, 0, 0), Candidate("b", 0.009, 0, 0), Candidate("c", 0.121, 0, 0)
    )
    assert [x.rtt_term for x in s[:2]] == [1.0, 1.0]  # loopback jitter: no reason to reorder
    assert s[2].rtt_term == pytest.approx(0.011 / (0.011 + 0.110))
    assert s[2].slow and s[2].rtt_term < SLOW_TERM


def test_score_normalises_every_term() -> None:
    cands = [
        Candidate("a", rtt=0.010, cost=0.09, heat=10),
        Candidate("b", rtt=0.110, cost=0.00, heat=0),
        Candidate("c", rtt=None, cost=0.05, heat=5),
    ]
    s = {x.candidate.name: x for x in score(cands, Weights())}
    assert s["a"].rtt_term == 1.0
    assert s["b"].rtt_term == pytest.approx(0.020 / (0.020 + 0.090))
    assert s["c"].rtt_term == 0.0 and not s["c"].measured  # unmeasured: not guessed
    assert s["b"].cost_term == 1.0
    assert s["a"].cost_term == pytest.approx(0.01 / 0.10)
    assert (s["a"].heat_term, s["b"].heat_term, s["c"].heat_term) == (1.0, 0.0, 0.5)
    assert s["a"].score == pytest.approx(0.40 * 1 + 0.35 * 0.1 + 0.25 * 1)


def test_nothing_measured_is_cold_and_keeps_the_pool_order() -> None:
    s = _scored(Candidate("a", None, 0, 0), Candidate("b", None, 0, 0))
    assert [x.rtt_term for x in s] == [1.0, 1.0]
    ranking = rank(s, mode="best", rng=Draws())  # no draw: nothing to explore
    assert (_names(ranking.order), ranking.reason) == (["a", "b"], "cold")


def test_while_an_upstream_has_its_first_probes_rtt_waits_for_it() -> None:
    s = _scored(Candidate("a", None, 0, 0, pending=True), Candidate("b", 0.001, 0, 0))
    assert [x.rtt_term for x in s] == [1.0, 1.0]
    ranking = rank(s, mode="best", rng=Draws())  # nothing explored while it is measured
    assert (_names(ranking.order), ranking.reason) == (["a", "b"], "cold")


# ------------------------------------------------------------------ heat


def test_heat_reorders_comparable_upstreams() -> None:
    s = _scored(Candidate("cold", 0.010, 0, 0), Candidate("hot", 0.012, 0, 30))
    ranking = rank(s, mode="best", rng=Draws())
    assert (_names(ranking.order), ranking.reason) == (["hot", "cold"], "heat")


def test_heat_never_keeps_a_clearly_slower_upstream_first() -> None:
    # Slower by 30 ms: not comparable. Its heat would have been worth more than the
    # RTT it lost (0.55 + 0.25 > 0.75): heat does not count for it.
    s = _scored(Candidate("hot-slowed", 0.040, 0, 50), Candidate("fast", 0.010, 0, 0))
    assert not s[0].heat_counts and s[0].score == pytest.approx(0.4 * 0.5 + 0.35)
    ranking = rank(s, mode="best", rng=Draws())
    assert (_names(ranking.order), ranking.reason) == (["fast", "hot-slowed"], "exploit")


def test_heat_counts_for_an_upstream_comparable_with_a_cheaper_leader() -> None:
    # The leader (by RTT and cost) is the cheap one; the hot one is as fast as it.
    s = _scored(
        Candidate("cheap", 0.050, 0.00, 0),
        Candidate("hot", 0.055, 0.01, 100),
        Candidate("fast-dear", 0.005, 0.09, 0),
    )
    by = {x.candidate.name: x for x in s}
    assert by["hot"].heat_counts and by["fast-dear"].heat_counts  # faster counts too
    assert rank(s, mode="best", rng=Draws()).order[0].candidate.name == "hot"


# ------------------------------------------------------------------ ranking


def test_best_mode_orders_by_score_and_ejected_last() -> None:
    s = _scored(
        Candidate("slow", 0.5, 0, 0),
        Candidate("fast", 0.01, 0, 0),
        Candidate("dead", 0.001, 0, 0, health="ejected"),
        Candidate("maybe", 0.01, 0, 0, health="half-open"),
    )
    order = rank(s, mode="best", rng=Draws()).order
    assert _names(order) == ["fast", "maybe", "slow", "dead"]  # crawling: after half-open


def test_a_crawling_upstream_is_never_first_however_cheap_or_hot() -> None:
    s = _scored(
        Candidate("cheap-hot-slow", 9.0, 0.0, 100.0),
        Candidate("dear-cold-fast", 0.02, 0.09, 0.0),
    )
    for mode in ("best", "weighted"):
        ranking = rank(s, mode=mode, rng=random.Random(3))
        assert ranking.order[0].candidate.name == "dear-cold-fast"
    cheap_slow = _scored(Candidate("cheap", 0.15, 0.0, 0), Candidate("dear", 0.02, 0.5, 0))
    assert cheap_slow[0].score > cheap_slow[1].score  # cost outweighs a 0.4 rtt weight...
    ranking = rank(cheap_slow, mode="best", rng=Draws())
    assert (ranking.order[0].candidate.name, ranking.reason) == ("dear", "slow-guard")


def test_ordered_mode_keeps_pool_order_but_healthy_first() -> None:
    s = _scored(
        Candidate("a", 0.5, 1, 0, health="ejected"),
        Candidate("b", 0.9, 1, 0),
        Candidate("c", 0.01, 0, 0),
        Candidate("d", None, 0, 0),
    )
    ranking = rank(s, mode="ordered", rng=Draws())
    assert (_names(ranking.order), ranking.reason) == (["b", "c", "d", "a"], "ordered")


def test_weighted_mode_spreads_among_near_best_only() -> None:
    s = _scored(
        Candidate("a", 0.010, 0, 0), Candidate("b", 0.011, 0, 0), Candidate("far", 0.3, 0, 0)
    )
    rng = random.Random(7)
    firsts = Counter(rank(s, mode="weighted", rng=rng).order[0].candidate.name for _ in range(2000))
    assert firsts["far"] == 0
    assert 700 < firsts["a"] < 1300 and 700 < firsts["b"] < 1300  # no herding


def test_fresh_tiers_first_for_mutable_answers() -> None:
    s = _scored(
        Candidate("cache", 0.001, 0, 0, tier="L2"), Candidate("origin", 0.2, 0.09, 0, tier="L0")
    )
    order = rank(s, mode="best", rng=Draws(), fresh_tiers=("L0", "L1")).order
    assert _names(order) == ["origin", "cache"]


# ------------------------------------------------------------------ exploration


def test_an_unmeasured_upstream_is_explored_for_a_share_of_requests() -> None:
    s = _scored(Candidate("measured", 0.050, 0, 0), Candidate("new", None, 0, 0))
    tried = rank(s, mode="best", rng=Draws(EXPLORE_SHARE * 0.99))
    assert (_names(tried.order), tried.reason) == (["new", "measured"], "explore")
    kept = rank(s, mode="best", rng=Draws(EXPLORE_SHARE))
    assert (_names(kept.order), kept.reason) == (["measured", "new"], "exploit")


def test_exploration_picks_among_the_unmeasured_by_the_same_draw() -> None:
    s = _scored(Candidate("m", 0.05, 0, 0), Candidate("x", None, 0, 0), Candidate("y", None, 0, 0))
    first = [rank(s, mode="best", rng=Draws(u)).order[0].candidate.name for u in (0.01, 0.06)]
    assert first == ["x", "y"]


def test_exploration_is_deterministic_given_the_seed() -> None:
    s = _scored(Candidate("m", 0.05, 0, 0), Candidate("new", None, 0, 0))

    def firsts(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [rank(s, mode="weighted", rng=rng).order[0].candidate.name for _ in range(500)]

    assert firsts(11) == firsts(11)
    assert 25 <= firsts(11).count("new") <= 75  # about EXPLORE_SHARE of 500, for this seed


def test_a_failing_half_open_or_ejected_unmeasured_upstream_is_not_explored() -> None:
    for new in (
        Candidate("new", None, 0, 0, failures=1),
        Candidate("new", None, 0, 0, health="half-open"),
        Candidate("new", None, 0, 0, health="ejected"),
    ):
        s = _scored(Candidate("m", 0.05, 0, 0), new)
        ranking = rank(s, mode="best", rng=Draws())  # no draw at all
        assert ranking.order[0].candidate.name == "m"


def test_unexplored_unmeasured_ranks_after_measured_but_before_slow() -> None:
    s = _scored(
        Candidate("new", None, 0, 0), Candidate("crawl", 1.0, 0, 0), Candidate("ok", 0.01, 0, 0)
    )
    assert _names(rank(s, mode="best", rng=Draws(0.99)).order) == ["ok", "new", "crawl"]


# ------------------------------------------------------------------ bandwidth


def test_zips_rank_by_bandwidth_too() -> None:
    near_thin = Candidate("near-thin", 0.010, 0, 0, bandwidth=1e6)
    far_fat = Candidate("far-fat", 0.030, 0, 0, bandwidth=50e6)
    small = rank(_scored(near_thin, far_fat), mode="best", rng=Draws()).order
    assert _names(small) == ["near-thin", "far-fat"]  # .info: RTT alone
    zip_order = rank(_scored(near_thin, far_fat, transfer=True), mode="best", rng=Draws()).order
    assert _names(zip_order) == ["far-fat", "near-thin"]  # 1 MiB: 1.06 s against 0.05 s


def test_an_upstream_of_unknown_bandwidth_is_given_the_best_known_for_zips() -> None:
    s = _scored(
        Candidate("thin", 0.010, 0, 0, bandwidth=1e6),
        Candidate("unknown", 0.010, 0, 0),
        Candidate("far-fat", 0.030, 0, 0, bandwidth=50e6),
        transfer=True,
    )
    assert [x.rtt_term for x in s][1] == 1.0  # 10 ms + 1 MiB at 50 MB/s: the fastest
    assert _names(rank(s, mode="best", rng=Draws()).order) == ["unknown", "far-fat", "thin"]


# ------------------------------------------------------------------ health and heat


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
