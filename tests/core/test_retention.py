"""The choice of what a store removes: least recently used first, down to a budget, never
what was used within min_idle or is being served; shared data freed with its last key."""

from __future__ import annotations

import pytest

from router.core.retention import Held, Stored, choose_evictions, orphans

NOW = 1_000_000.0
HOUR = 3600.0


def _held(*rows: tuple[str, str, int, float]) -> list[Held]:
    return [Held(key, data, size, NOW - age) for key, data, size, age in rows]


@pytest.mark.parametrize(
    ("rows", "budget", "pinned", "evict", "kept", "over"),
    [
        # under the budget: nothing goes
        ([("a", "1", 10, 5 * HOUR), ("b", "2", 10, 4 * HOUR)], 20, (), (), 20, False),
        # least recently used first, just enough
        (
            [("new", "1", 10, 2 * HOUR), ("old", "2", 10, 9 * HOUR), ("mid", "3", 10, 5 * HOUR)],
            15,
            (),
            ("old", "mid"),
            10,
            False,
        ),
        # used within min_idle (1 h): spared, the store stays above its budget
        ([("hot", "1", 10, 60.0), ("old", "2", 10, 9 * HOUR)], 5, (), ("old",), 10, True),
        # pinned (being served): spared even when old
        (
            [("served", "1", 10, 9 * HOUR), ("old", "2", 10, 5 * HOUR)],
            10,
            ("1",),
            ("old",),
            10,
            False,
        ),
        # two keys share data: its bytes are freed only with the second
        (
            [("x1", "d", 10, 9 * HOUR), ("x2", "d", 10, 8 * HOUR), ("y", "e", 10, 2 * HOUR)],
            10,
            (),
            ("x1", "x2"),
            10,
            False,
        ),
        # budget 0: everything idle goes
        ([("a", "1", 3, 2 * HOUR), ("b", "2", 4, 3 * HOUR)], 0, (), ("b", "a"), 0, False),
    ],
)
def test_choose_evictions(
    rows: list[tuple[str, str, int, float]],
    budget: int,
    pinned: tuple[str, ...],
    evict: tuple[str, ...],
    kept: int,
    over: bool,
) -> None:
    plan = choose_evictions(_held(*rows), budget, NOW, min_idle=HOUR, pinned=pinned)
    assert plan.evict == evict
    assert plan.kept_bytes == kept
    assert plan.over_budget is over
    assert plan.freed_bytes == sum({d: s for _, d, s, _ in rows}.values()) - kept


def test_a_tie_in_last_access_is_broken_by_key_so_the_choice_is_stable() -> None:
    rows = [Held(k, k, 1, NOW - HOUR * 2) for k in ("c", "a", "b")]
    assert choose_evictions(rows, 1, NOW, min_idle=HOUR).evict == ("a", "b")


def test_counts_protected_keys_and_objects_left() -> None:
    plan = choose_evictions(
        _held(("hot", "1", 5, 1.0), ("old", "2", 5, 2 * HOUR), ("d2", "2", 5, 3 * HOUR)),
        0,
        NOW,
        min_idle=HOUR,
    )
    assert (plan.evict, plan.protected, plan.kept_objects) == (("d2", "old"), 1, 1)


def test_orphans_are_unnamed_data_older_than_the_grace() -> None:
    data = [
        Stored("named", 5, NOW - 2 * HOUR),
        Stored("lost", 7, NOW - 2 * HOUR),
        Stored("uploading", 9, NOW - 60.0),
    ]
    assert orphans(data, {"named"}, NOW, grace=HOUR) == (data[1],)
