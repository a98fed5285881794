"""Walking an ordered pool the way the go command walks GOPROXY.

The walk is one pure decision per attempt, driven by a table:
`fallback: not-found` (GOPROXY ",") moves on only after 404/410;
`fallback: any-error` (GOPROXY "|") moves on after any failure. When nothing
serves, the answer follows the go command's own error preference: the last
real error if there was one, else not-found.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    """What one upstream attempt came to."""

    OK = "ok"  # 200: serve it
    NOT_FOUND = "not_found"  # 404 or 410
    REFUSED = "refused"  # 403: a gatekeeper said no
    ERROR = "error"  # any other status, a broken or oversized body
    TIMEOUT = "timeout"  # a deadline passed
    UNREACHABLE = "unreachable"  # connect failed, reset before an answer
    BUSY = "busy"  # no free connection to it here: this gateway's limit, not its fault


class Step(Enum):
    SERVE = "serve"
    NEXT = "next"
    STOP = "stop"


# (fallback mode, outcome) -> step. L3 upstreams never stop a walk (see below).
_STEPS: dict[tuple[str, Outcome], Step] = {
    ("not-found", Outcome.OK): Step.SERVE,
    ("not-found", Outcome.NOT_FOUND): Step.NEXT,
    ("not-found", Outcome.REFUSED): Step.STOP,
    ("not-found", Outcome.ERROR): Step.STOP,
    ("not-found", Outcome.TIMEOUT): Step.STOP,
    ("not-found", Outcome.UNREACHABLE): Step.STOP,
    ("not-found", Outcome.BUSY): Step.STOP,
    ("any-error", Outcome.OK): Step.SERVE,
    ("any-error", Outcome.NOT_FOUND): Step.NEXT,
    ("any-error", Outcome.REFUSED): Step.NEXT,
    ("any-error", Outcome.ERROR): Step.NEXT,
    ("any-error", Outcome.TIMEOUT): Step.NEXT,
    ("any-error", Outcome.UNREACHABLE): Step.NEXT,
    ("any-error", Outcome.BUSY): Step.NEXT,
}


def next_step(fallback: str, outcome: Outcome, *, always_fall_through: bool = False) -> Step:
    """The step after one attempt. `always_fall_through` is for upstreams (L3) whose
    failures must never surface to clients."""
    step = _STEPS[(fallback, outcome)]
    if step is Step.STOP and always_fall_through:
        return Step.NEXT
    return step


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished attempt: which upstream, what came of it, and a one-line reason."""

    upstream: str
    outcome: Outcome
    status: int | None = None
    reason: str = ""
    cause: str = ""  # finer than outcome for metrics: timeout, reset, truncated, 5xx...
    seconds: float | None = None  # time to the response head, when there was one


@dataclass(frozen=True, slots=True)
class Failure:
    """The answer when no upstream served: status and a one-line plain-text reason."""

    status: int
    reason: str
    upstream: str | None


def final_failure(attempts: list[Attempt]) -> Failure:
    """The client's answer after every attempt failed, in the go command's preference.

    404 when every upstream said not found (or there was none to ask); else the
    last real error: 403 passes through (a gatekeeper's no), a timeout is 504, no free
    connection here is 503, anything else 502.
    """
    if not attempts:
        return Failure(404, "not found: no upstream can serve this request", None)
    errors = [a for a in attempts if a.outcome is not Outcome.NOT_FOUND]
    if not errors:
        last = attempts[-1]
        return Failure(last.status or 404, last.reason or "not found", last.upstream)
    last = errors[-1]
    status = {Outcome.REFUSED: 403, Outcome.TIMEOUT: 504, Outcome.BUSY: 503}.get(last.outcome, 502)
    return Failure(status, f"upstream {last.upstream}: {last.reason}", last.upstream)


def classify_status(status: int) -> Outcome:
    """The outcome of an upstream answer's HTTP status."""
    if status == 200:
        return Outcome.OK
    if status in (404, 410):
        return Outcome.NOT_FOUND
    if status == 403:
        return Outcome.REFUSED
    return Outcome.ERROR
