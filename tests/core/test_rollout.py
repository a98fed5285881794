"""``router.core.rollout``: sampling, the sliding mismatch window, states and fingerprints."""

from __future__ import annotations

import pytest

from router.core.model import Rollout
from router.core.rollout import STATES, Fingerprint, RolloutTracker, info_fields


def tracker(
    *, sample: float = 0.1, max_mismatch: float = 0.25, window: float = 10.0, started: float = 0.0
) -> RolloutTracker:
    config = Rollout(
        upstream="candidate",
        compare_with="baseline",
        sample=sample,
        max_mismatch=max_mismatch,
        window=window,
    )
    return RolloutTracker(config, started=started)


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("draw", "sampled"), [(0.0, True), (0.299, True), (0.3, False), (0.999, False)]
)
def test_sampled_when_the_draw_falls_below_the_sample_share(draw: float, sampled: bool) -> None:
    assert tracker(sample=0.3).sampled(draw) is sampled


def test_nothing_is_sampled_once_rolled_back() -> None:
    t = tracker(sample=1.0, max_mismatch=0.0)
    assert t.sampled(0.0)
    assert t.record(1.0, mismatch=True)
    assert not t.sampled(0.0)


def test_a_zero_sample_compares_nothing() -> None:
    assert not tracker(sample=0.0).sampled(0.0)


# ---------------------------------------------------------------------------- the window


def test_rolls_back_exactly_when_the_mismatch_share_exceeds_the_limit() -> None:
    t = tracker(max_mismatch=0.25, window=10.0)
    for now in (1.0, 2.0, 3.0):
        assert t.record(now, mismatch=False) is False
    # 1 of 4 is 0.25: at the limit, not over it
    assert t.record(4.0, mismatch=True, what="a.zip differs") is False
    assert t.state(4.0) == "comparing"
    # 2 of 5 is 0.4: over
    assert t.record(5.0, mismatch=True, what="b.mod differs") is True
    assert t.rolled_back_at == 5.0
    assert t.state(5.0) == "rolled_back"
    assert t.last_mismatch == "b.mod differs"


def test_record_reports_the_rollback_only_once() -> None:
    t = tracker(max_mismatch=0.0)
    assert t.record(1.0, mismatch=True) is True
    assert t.record(2.0, mismatch=True) is False
    assert t.rolled_back_at == 1.0
    assert (t.compared, t.mismatches) == (2, 2)


def test_agreeing_answers_never_roll_back_even_with_a_zero_limit() -> None:
    t = tracker(max_mismatch=0.0)
    assert not any(t.record(float(i), mismatch=False) for i in range(50))
    assert t.rolled_back_at is None


def test_samples_older_than_the_window_no_longer_count() -> None:
    t = tracker(max_mismatch=0.25, window=10.0)
    for now in range(10):
        t.record(float(now), mismatch=False)
    # with every sample still in the window, 1 of 11 would not roll back;
    # at t=30 the ten good ones are outside it, so this mismatch is 1 of 1
    assert t.record(30.0, mismatch=True) is True


def test_a_mismatch_among_recent_agreements_is_diluted() -> None:
    t = tracker(max_mismatch=0.25, window=10.0)
    for now in range(10):
        t.record(float(now), mismatch=False)
    assert t.record(9.5, mismatch=True) is False


def test_window_counts_trim_at_the_horizon() -> None:
    t = tracker(window=10.0)
    t.record(0.0, mismatch=True, what="x")
    t.record(5.0, mismatch=False)
    assert t.window_counts(5.0) == (2, 1)
    assert t.window_counts(10.0) == (2, 1)  # a sample exactly `window` old still counts
    assert t.window_counts(10.5) == (1, 0)
    assert t.window_counts(15.5) == (0, 0)
    # totals are not windowed
    assert (t.compared, t.mismatches) == (2, 1)


def test_mismatches_before_a_reset_do_not_count_after_it() -> None:
    t = tracker(max_mismatch=0.5, window=10.0)
    assert t.record(0.0, mismatch=True) is True
    t.reset(1.0)
    assert t.record(2.0, mismatch=False) is False
    # 1 bad of 2 since the reset sits at the limit; with the old one it would be 2 of 3
    assert t.record(3.0, mismatch=True) is False
    assert t.window_counts(3.0) == (2, 1)


# ---------------------------------------------------------------------------- states


def test_comparing_until_a_full_window_has_passed() -> None:
    t = tracker(window=10.0, started=100.0)
    t.record(101.0, mismatch=False)
    assert t.state(109.9) == "comparing"
    assert t.state(110.0) == "healthy"


def test_a_full_window_without_any_comparison_is_still_comparing() -> None:
    t = tracker(window=10.0, started=0.0)
    assert t.state(1000.0) == "comparing"


def test_rolled_back_wins_over_healthy() -> None:
    t = tracker(window=10.0, max_mismatch=0.0)
    t.record(20.0, mismatch=True)
    assert t.state(100.0) == "rolled_back"
    assert t.state(100.0) in STATES


def test_roll_back_from_another_replica_is_adopted_after_the_last_reset() -> None:
    t = tracker(window=10.0)
    t.roll_back(5.0)
    assert t.state(6.0) == "rolled_back"
    t.reset(50.0)
    assert t.state(50.0) == "comparing"
    t.roll_back(40.0)  # decided before the reset: stale
    t.roll_back(50.0)  # not after it either
    assert t.rolled_back_at is None
    t.roll_back(60.0)
    assert t.rolled_back_at == 60.0
    t.roll_back(70.0)  # the first rollback stands
    assert t.rolled_back_at == 60.0


def test_reset_starts_a_fresh_comparison_period() -> None:
    t = tracker(window=10.0, max_mismatch=0.0)
    t.record(1.0, mismatch=False)
    t.record(2.0, mismatch=True, what="m.zip")
    assert t.state(2.0) == "rolled_back"
    t.reset(3.0)
    assert t.rolled_back_at is None
    assert (t.reset_at, t.started) == (3.0, 3.0)
    assert t.window_counts(3.0) == (0, 0)
    t.record(4.0, mismatch=False)
    assert t.state(12.0) == "comparing"
    assert t.state(13.0) == "healthy"  # a full window since the reset
    assert (t.compared, t.mismatches) == (3, 1)  # totals survive the reset
    assert t.sampled(0.0)


# ---------------------------------------------------------------------------- view


def test_view_reports_config_window_and_totals() -> None:
    t = tracker(sample=0.5, max_mismatch=0.25, window=10.0)
    t.record(1.0, mismatch=False)
    t.record(2.0, mismatch=True, what="example.com/m@v1.0.0.zip")
    t.unresolved += 1
    view = t.view(2.0)
    assert view == {
        "upstream": "candidate",
        "compare_with": "baseline",
        "state": "rolled_back",
        "sample": 0.5,
        "max_mismatch": 0.25,
        "window_seconds": 10.0,
        "compared_in_window": 2,
        "mismatches_in_window": 1,
        "compared_total": 2,
        "mismatches_total": 1,
        "unresolved_total": 1,
        "last_mismatch": "example.com/m@v1.0.0.zip",
        "rolled_back_seconds_ago": 0.0,
    }
    assert t.view(14.26)["rolled_back_seconds_ago"] == 12.3
    assert t.view(14.26)["compared_in_window"] == 0


def test_view_of_a_fresh_tracker() -> None:
    view = tracker().view(0.0)
    assert view["state"] == "comparing"
    assert view["rolled_back_seconds_ago"] is None
    assert view["last_mismatch"] is None
    assert (view["compared_in_window"], view["compared_total"]) == (0, 0)


# ---------------------------------------------------------------------------- fingerprints


FOUND = Fingerprint(found=True, size=10, digest="aa")


@pytest.mark.parametrize(
    ("a", "b", "differs"),
    [
        (FOUND, FOUND, False),
        (FOUND, Fingerprint(found=False, size=0, digest=""), True),
        (Fingerprint(found=False, size=0, digest=""), FOUND, True),
        # two not-found answers agree whatever their bodies
        (Fingerprint(False, 3, "x"), Fingerprint(False, 9, "y"), False),
        (FOUND, Fingerprint(True, 11, "aa"), True),
        (FOUND, Fingerprint(True, 10, "bb"), True),
        # .info: only (Version, Time) matter
        (
            Fingerprint(True, 50, "aa", ("v1.0.0", "2024-01-01T00:00:00Z")),
            Fingerprint(True, 90, "bb", ("v1.0.0", "2024-01-01T00:00:00Z")),
            False,
        ),
        (
            Fingerprint(True, 50, "aa", ("v1.0.0", "2024-01-01T00:00:00Z")),
            Fingerprint(True, 50, "aa", ("v1.0.0", "2024-01-02T00:00:00Z")),
            True,
        ),
        (
            Fingerprint(True, 50, "aa", ("v1.0.0", "t")),
            Fingerprint(True, 50, "aa", ("v1.0.1", "t")),
            True,
        ),
        # one side not parsed as .info: compared on bytes
        (Fingerprint(True, 10, "aa", ("v1.0.0", "t")), FOUND, False),
        (Fingerprint(True, 10, "aa", ("v1.0.0", "t")), Fingerprint(True, 10, "bb"), True),
    ],
)
def test_fingerprint_differs(a: Fingerprint, b: Fingerprint, differs: bool) -> None:
    assert a.differs(b) is differs
    assert b.differs(a) is differs


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            b'{"Version":"v1.2.3","Time":"2024-01-01T00:00:00Z","Origin":{"VCS":"git"}}',
            ("v1.2.3", "2024-01-01T00:00:00Z"),
        ),
        (b'{"Version":"v1.2.3"}', ("v1.2.3", "")),
        (b"{}", ("", "")),
        (b"[1, 2]", None),
        (b'"v1.2.3"', None),
        (b"not json", None),
        (b"", None),
        (b"\xff\xfe\xfa", None),
    ],
)
def test_info_fields(body: bytes, fields: tuple[str, str] | None) -> None:
    assert info_fields(body) == fields


def test_after_a_reset_healthy_needs_a_new_comparison() -> None:
    tracker = RolloutTracker(Rollout("cand", "base", window=10.0), started=0.0)
    tracker.record(1.0, False)
    tracker.reset(3.0)
    assert tracker.state(13.0) == "comparing"
    tracker.record(14.0, False)
    assert tracker.state(14.0) == "healthy"
