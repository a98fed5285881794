"""Token buckets and pull windows on injected time."""

from __future__ import annotations

import pytest

from router.core.limits import Gcra, Limit, Limiter, PullWindow


def test_gcra_allows_burst_then_rate() -> None:
    g = Gcra()
    allowed = [g.take(0.0, rate=10, burst=5) == 0 for _ in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    assert g.take(0.0, rate=10, burst=5) == pytest.approx(0.1)
    assert g.take(0.1, rate=10, burst=5) == 0
    assert g.take(0.1, rate=10, burst=5) > 0


def test_charge_spends_tokens_used_elsewhere() -> None:
    g = Gcra()
    g.charge(0.0, rate=10, n=5)
    assert g.take(0.0, rate=10, burst=5) > 0


def test_limiter_share_enforces_a_fair_part_and_counts_what_it_allowed() -> None:
    lim = Limiter(share=0.5)
    limit = Limit(rate=10, burst=10, text="10/s")
    allowed = sum(lim.check("k", limit, 0.0) == 0 for _ in range(20))
    assert allowed == 5
    assert lim.pending == {"k": 5}


def test_limiter_keys_are_bounded() -> None:
    lim = Limiter(max_keys=100)
    for i in range(1000):
        lim.check(f"k{i}", Limit(1, 1, "1/s"), 0.0)
    assert len(lim) == 100


def test_pull_window_flags_past_threshold_and_cools_down() -> None:
    w = PullWindow(window=300, threshold=3, cooldown=60)
    flags = [w.record("crawler", float(i)) for i in range(5)]
    assert [f is not None for f in flags] == [False, False, False, True, False]
    assert w.flagged("crawler", 10.0)
    assert not w.flagged("ci-runner", 10.0)
    assert w.flagged("crawler", 4.0 + 59.0)  # cooldown runs from the last excess
    assert not w.flagged("crawler", 4.0 + 61.0)


def test_pull_window_slides() -> None:
    w = PullWindow(window=10, threshold=3, cooldown=1)
    for t in (0.0, 1.0, 2.0):
        assert w.record("a", t) is None
    assert w.record("a", 15.0) is None  # the first three left the window


def test_remote_pulls_count() -> None:
    w = PullWindow(window=300, threshold=5, cooldown=60)
    w.remote["a"] = 5
    assert w.record("a", 0.0) is not None


def test_pull_window_keys_are_bounded() -> None:
    w = PullWindow(window=300, threshold=5, cooldown=60, max_keys=50)
    for i in range(500):
        w.record(f"ip{i}", 0.0)
    assert len(w.keys()) == 50
