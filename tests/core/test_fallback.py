"""The pool walk follows the go command's GOPROXY ',' and '|' semantics."""

from __future__ import annotations

import pytest

from router.core.fallback import (
    Attempt,
    Outcome,
    Step,
    classify_status,
    final_failure,
    next_step,
)

O = Outcome


@pytest.mark.parametrize(
    ("mode", "outcome", "step"),
    [
        ("not-found", O.OK, Step.SERVE),
        ("not-found", O.NOT_FOUND, Step.NEXT),
        ("not-found", O.REFUSED, Step.STOP),
        ("not-found", O.ERROR, Step.STOP),
        ("not-found", O.TIMEOUT, Step.STOP),
        ("not-found", O.UNREACHABLE, Step.STOP),
        ("any-error", O.OK, Step.SERVE),
        ("any-error", O.NOT_FOUND, Step.NEXT),
        ("any-error", O.REFUSED, Step.NEXT),
        ("any-error", O.ERROR, Step.NEXT),
        ("any-error", O.TIMEOUT, Step.NEXT),
        ("any-error", O.UNREACHABLE, Step.NEXT),
    ],
)
def test_next_step_table(mode: str, outcome: Outcome, step: Step) -> None:
    assert next_step(mode, outcome) is step


def test_l3_failures_always_fall_through() -> None:
    assert next_step("not-found", O.ERROR, always_fall_through=True) is Step.NEXT
    assert next_step("not-found", O.OK, always_fall_through=True) is Step.SERVE


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, O.OK), (404, O.NOT_FOUND), (410, O.NOT_FOUND), (403, O.REFUSED), (500, O.ERROR),
     (204, O.ERROR), (206, O.ERROR), (429, O.ERROR)],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


@pytest.mark.parametrize(
    ("attempts", "status"),
    [
        ([], 404),
        ([Attempt("a", O.NOT_FOUND, 404), Attempt("b", O.NOT_FOUND, 410)], 410),
        ([Attempt("a", O.ERROR, 500, "500")], 502),
        ([Attempt("a", O.TIMEOUT, None, "slow")], 504),
        ([Attempt("a", O.UNREACHABLE, None, "refused")], 502),
        ([Attempt("a", O.REFUSED, 403, "403")], 403),
        # error preference: the last real error wins over a later not-found
        ([Attempt("a", O.TIMEOUT), Attempt("b", O.NOT_FOUND, 404)], 504),
        ([Attempt("a", O.ERROR), Attempt("b", O.TIMEOUT)], 504),
    ],
)
def test_final_failure_prefers_last_real_error(attempts: list[Attempt], status: int) -> None:
    assert final_failure(attempts).status == status
