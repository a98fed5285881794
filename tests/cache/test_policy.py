"""Behaviour of the metadata cache policies (router.cache.policy): pure, time injected."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from typing import Any

import pytest
from support.data import read_trace

from router.cache.policy import CachePolicy, LRUKPolicy, LRUPolicy


def ref(policy: CachePolicy, key: Hashable, now: float, size: int = 1) -> list[Hashable] | None:
    """One lookup as the adapter does it: access, and admit on a miss (returns evictions)."""
    if policy.access(key, size, now):
        return None
    return policy.admit(key, size, now)


def hit_ratio(policy: CachePolicy, keys: Iterable[Hashable], step: float = 0.01) -> float:
    """Replay keys (size 1) at `step` seconds apart."""
    hits = total = 0
    for i, key in enumerate(keys):
        total += 1
        if ref(policy, key, i * step) is None:
            hits += 1
    return hits / total


def lruk(capacity: int, **kw: Any) -> LRUKPolicy:
    """Unit-size LRU-K policy with `capacity` entries."""
    return LRUKPolicy(capacity, capacity, **kw)


# -- basics -------------------------------------------------------------------


@pytest.mark.parametrize("make", [LRUPolicy, LRUKPolicy])
def test_miss_then_hit_and_protocol(make: type[LRUPolicy] | type[LRUKPolicy]) -> None:
    p = make(100, 10)
    assert isinstance(p, CachePolicy)
    assert p.access("a", 5, 0.0) is False
    assert p.admit("a", 5, 0.0) == []
    assert "a" in p and len(p) == 1 and p.used_bytes == 5
    assert p.access("a", 5, 1.0) is True
    assert "b" not in p


@pytest.mark.parametrize("make", [LRUPolicy, LRUKPolicy])
def test_oversized_and_zero_budgets_reject(make: type[LRUPolicy] | type[LRUKPolicy]) -> None:
    p = make(10, 10)
    assert p.admit("big", 11, 0.0) == ["big"]
    assert "big" not in p and p.used_bytes == 0
    assert make(10, 0).admit("a", 1, 0.0) == ["a"]
    with pytest.raises(ValueError):
        p.admit("neg", -1, 0.0)


@pytest.mark.parametrize("make", [LRUPolicy, LRUKPolicy])
def test_remove(make: type[LRUPolicy] | type[LRUKPolicy]) -> None:
    p = make(100, 10)
    p.admit("a", 7, 0.0)
    p.admit("b", 3, 0.1)
    p.remove("a")
    p.remove("absent")
    assert "a" not in p and "b" in p
    assert len(p) == 1 and p.used_bytes == 3
    assert p.access("a", 7, 1.0) is False
    assert p.admit("a", 7, 1.0) == [] and p.used_bytes == 10


@pytest.mark.parametrize("make", [LRUPolicy, LRUKPolicy])
def test_readmitting_a_resident_key_updates_its_size(
    make: type[LRUPolicy] | type[LRUKPolicy],
) -> None:
    p = make(100, 10)
    p.admit("a", 10, 0.0)
    p.admit("a", 40, 1.0)
    assert len(p) == 1 and p.used_bytes == 40


def test_lru_evicts_least_recent() -> None:
    p = LRUPolicy(3, 3)
    for t, key in enumerate("abc"):
        ref(p, key, t)
    ref(p, "a", 3)
    assert ref(p, "d", 4) == ["b"]


def test_time_running_backwards_is_clamped() -> None:
    p = lruk(4)
    ref(p, "a", 10.0)
    ref(p, "b", 5.0)
    assert p.access("a", 1, 1.0) is True


# -- budgets --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("make", [LRUPolicy, LRUKPolicy])
def test_bytes_and_entries_never_exceeded(
    make: type[LRUPolicy] | type[LRUKPolicy], seed: int
) -> None:
    rng = random.Random(seed)
    p = make(500, 30)
    resident: dict[Hashable, int] = {}
    now = 0.0
    for _ in range(4000):
        now += rng.random() * 0.5
        key = int(rng.paretovariate(1.2)) % 200
        if rng.random() < 0.05:
            p.remove(key)
            resident.pop(key, None)
        elif not p.access(key, 0, now):
            size = rng.randint(0, 60)
            evicted = p.admit(key, size, now)
            resident[key] = size
            for old in evicted:
                resident.pop(old)
        assert p.used_bytes <= p.capacity_bytes and len(p) <= p.max_entries
        assert len(p) == len(resident) and p.used_bytes == sum(resident.values())
    assert all(key in p for key in resident)


def test_history_is_bounded() -> None:
    p = LRUKPolicy(10, 10, history=25)
    for i in range(1000):
        ref(p, i, i * 0.01)
    assert len(p._ghosts) <= 25  # white-box: retained histories of evicted keys


# -- LRU-K order, CRP, retained history, decay ------------------------------------


def test_lru2_evicts_single_references_first_then_oldest_penultimate() -> None:
    p = lruk(4, crp=0.0, decay=1.0)
    for t, key in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (6, "b"), (7, "a")]:
        ref(p, key, t)
    # a: refs 1, 7; b: refs 2, 6; c: one ref; d: newest, in the window.
    for t in (8, 9, 10):
        p.access("x", 1, t)  # x earns frequency while not resident
    assert p.admit("x", 1, 10) == ["d"]  # d (never re-used) loses admission
    assert ref(p, "y", 11) == ["c"]  # x enters; single-reference c goes first
    for t in (12, 13, 14, 15):
        p.access("z", 1, t)
    assert p.admit("z", 1, 15) == ["y"]
    # LRU would now evict b (last used at 6); LRU-2 evicts a (penultimate 1 < 2).
    assert ref(p, "w", 16) == ["a"]


def _crp_scenario(crp: float) -> list[Hashable] | None:
    p = lruk(4, crp=crp, decay=1.0)
    for t, key in [(1, "p"), (1.5, "p"), (2, "q"), (3, "r"), (3.5, "s"), (4, "q")]:
        ref(p, key, t)
    for t in (5, 7, 9):
        p.access("x", 1, t)
    assert p.admit("x", 1, 9) == ["s"]
    return ref(p, "y", 10)


def test_correlated_references_count_once() -> None:
    # p was referenced twice 0.5 s apart: within a 1 s CRP that is one reference,
    # so p is a single-reference key and goes before r.
    assert _crp_scenario(crp=1.0) == ["p"]
    # Without a CRP, p has two references and r (one) is the victim.
    assert _crp_scenario(crp=0.0) == ["r"]


def test_a_correlated_burst_does_not_buy_admission() -> None:
    p = lruk(3, crp=1.0, decay=1.0)
    for when, key in [(1.0, "a"), (2.0, "b"), (3.0, "c")]:
        ref(p, key, when)
    for t in (5.0, 5.2, 5.4, 5.6):
        p.access("burst", 1, t)
    p.admit("burst", 1, 5.6)
    assert ref(p, "d", 6) == ["burst"]
    for t in (7.0, 9.0, 11.0):
        p.access("steady", 1, t)
    p.admit("steady", 1, 11.0)
    assert ref(p, "e", 12) == ["a"]  # steady (3 uncorrelated refs) displaces a


def test_evicted_key_regains_its_history() -> None:
    for history, expected in [(None, [4.0, 2.0]), (0, [4.0, float("-inf")])]:
        p = LRUKPolicy(3, 10, crp=0.0, decay=1.0, history=history)
        ref(p, "h", 1.0)
        ref(p, "h", 2.0)
        assert p.admit("big", 3, 3.0) == ["h"]
        assert p.access("h", 1, 4.0) is False
        rec = p._ghosts.get(hash("h"))  # white-box: the retained K-history
        hist = rec.hist if rec is not None else None
        if history == 0:
            assert hist is None
        else:
            assert hist == expected


def test_retained_history_wins_admission_back() -> None:
    def run(history: int | None) -> list[Hashable] | None:
        p = LRUKPolicy(3, 3, crp=0.0, decay=1.0, history=history)
        for t, key in [(1, "h"), (2, "h"), (3, "a"), (4, "b")]:
            ref(p, key, t)
        p.remove("h")  # e.g. TTL expiry: the value goes, the history stays
        ref(p, "c", 5)
        ref(p, "h", 6)
        return ref(p, "d", 7)  # pushes h out of the window against victim a

    assert run(history=None) == ["a"]
    assert run(history=0) == ["h"]


def _decay_scenario(decay: float) -> list[Hashable] | None:
    p = lruk(3, crp=0.0, decay=decay)
    for t in (0.0, 1.0, 2.0):
        p.access("x", 1, t)  # popular long ago
    for t, key in [(50, "a"), (51, "b"), (52, "c")]:
        ref(p, key, t)
    ref(p, "x", 100.0)
    return ref(p, "y", 101)


def test_time_decay_forgets_old_popularity() -> None:
    assert _decay_scenario(decay=1.0) == ["a"]  # x's three old refs still count
    assert _decay_scenario(decay=0.9) == ["x"]  # 0.9 ** 98: they are forgotten


# -- workload shapes ------------------------------------------------------------


def test_scan_does_not_flush_hot_set() -> None:
    rng = random.Random(7)
    hot = [f"hot{i}" for i in range(80)]
    keys = [rng.choice(hot) for _ in range(4000)] + [f"scan{i}" for i in range(3000)]
    ours, lru = lruk(100), LRUPolicy(100, 100)
    hit_ratio(ours, keys)
    hit_ratio(lru, keys)
    assert sum(k in ours for k in hot) >= 0.9 * len(hot)
    assert sum(k in lru for k in hot) == 0


def test_loop_larger_than_cache_beats_lru() -> None:
    keys = list(range(150)) * 20
    ours, lru = hit_ratio(lruk(100), keys), hit_ratio(LRUPolicy(100, 100), keys)
    assert lru == 0.0
    assert ours > 0.5


def _recency_trace(n: int, seed: int) -> list[int]:
    """Sprite-like: mostly re-references of recently used keys, drifting slowly."""
    rng = random.Random(seed)
    recent: list[int] = []
    out: list[int] = []
    fresh = 0
    for _ in range(n):
        if recent and rng.random() < 0.85:
            key = recent[-1 - min(len(recent) - 1, int(rng.expovariate(1 / 25)))]
            recent.remove(key)
        else:
            key, fresh = fresh, fresh + 1
        recent.append(key)
        del recent[:-400]
        out.append(key)
    return out


def test_recency_pattern_close_to_lru() -> None:
    keys = _recency_trace(20_000, seed=3)
    ours_policy = lruk(60)
    ours, lru = hit_ratio(ours_policy, keys), hit_ratio(LRUPolicy(60, 60), keys)
    assert ours >= lru - 0.02
    assert ours_policy.window_share > 0.01  # the window grew towards recency


# -- real traces ----------------------------------------------------------------


def test_real_trace_gli_loops() -> None:
    keys = read_trace("gli")
    cap = len(set(keys)) // 4
    ours, lru = hit_ratio(lruk(cap), keys), hit_ratio(LRUPolicy(cap, cap), keys)
    assert lru < 0.02 and ours > 0.38


def test_real_trace_sprite_slice_near_lru() -> None:
    keys = read_trace("sprite", limit=30_000)
    ours, lru = hit_ratio(lruk(707), keys), hit_ratio(LRUPolicy(707, 707), keys)
    assert ours >= lru - 0.015
