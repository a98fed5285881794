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

OC = Outcome


@pytest.mark.parametrize(
    ("mode", "outcome", "step"),
    [
        ("not-found", OC.OK, Step.SERVE),
        ("not-found", OC.NOT_FOUND, Step.NEXT),
        ("not-found", OC.REFUSED, Step.STOP),
        ("not-found", OC.ERROR, Step.STOP),
        ("not-found", OC.TIMEOUT, Step.STOP),
        ("not-found", OC.UNREACHABLE, Step.STOP),
        ("any-error", OC.OK, Step.SERVE),
        ("any-error", OC.NOT_FOUND, Step.NEXT),
        ("any-error", OC.REFUSED, Step.NEXT),
        ("any-error", OC.ERROR, Step.NEXT),
        ("any-error", OC.TIMEOUT, Step.NEXT),
        ("any-error", OC.UNREACHABLE, Step.NEXT),
    ],
)
def test_next_step_table(mode: str, outcome: Outcome, step: Step) -> None:
    assert next_step(mode, outcome) is step


def test_l3_failures_always_fall_through() -> None:
    assert next_step("not-found", OC.ERROR, always_fall_through=True) is Step.NEXT
    assert next_step("not-found", OC.OK, always_fall_through=True) is Step.SERVE


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, OC.OK),
        (404, OC.NOT_FOUND),
        (410, OC.NOT_FOUND),
        (403, OC.REFUSED),
        (500, OC.ERROR),
        (204, OC.ERROR),
        (206, OC.ERROR),
        (429, OC.ERROR),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


@pytest.mark.parametrize(
    ("attempts", "status"),
    [
        ([], 404),
        ([Attempt("a", OC.NOT_FOUND, 404), Attempt("b", OC.NOT_FOUND, 410)], 410),
        ([Attempt("a", OC.ERROR, 500, "500")], 502),
        ([Attempt("a", OC.TIMEOUT, None, "slow")], 504),
        ([Attempt("a", OC.UNREACHABLE, None, "refused")], 502),
        ([Attempt("a", OC.REFUSED, 403, "403")], 403),
        # error preference: the last real error wins over a later not-found
        ([Attempt("a", OC.TIMEOUT), Attempt("b", OC.NOT_FOUND, 404)], 504),
        ([Attempt("a", OC.ERROR), Attempt("b", OC.TIMEOUT)], 504),
    ],
)
def test_final_failure_prefers_last_real_error(attempts: list[Attempt], status: int) -> None:
    assert final_failure(attempts).status == status
