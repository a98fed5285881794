"""Mirror rollouts (seed 4.4), pure: sample, compare, decide to roll back.

A rollout puts a candidate upstream next to a trusted baseline. A share (`sample`) of the
immutable requests routed to the candidate is also fetched from the baseline and the two
answers compared. When the share of differing answers within the last `window` seconds
exceeds `max_mismatch`, the candidate is rolled back: taken out of selection until an
operator resets it. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from router.core.model import Rollout

State = Literal["comparing", "healthy", "rolled_back"]
STATES: tuple[State, ...] = ("comparing", "healthy", "rolled_back")
RETRY_DELAYS = (0.2, 0.4, 0.8, 1.6, 3.2)  # a comparison whose baseline failed is retried
MAX_SAMPLES = 100_000  # comparisons remembered per window, whatever the traffic


@dataclass(slots=True)
class RolloutTracker:
    """One rollout's comparisons in its sliding window, and its state."""

    config: Rollout
    started: float
    rolled_back_at: float | None = None
    reset_at: float = 0.0
    compared: int = 0
    mismatches: int = 0
    compared_since_start: int = 0  # since `started` (a reset starts again)
    unresolved: int = 0  # comparisons given up (the baseline never answered)
    last_mismatch: str | None = None
    _window: deque[tuple[float, bool]] = field(default_factory=deque)

    @property
    def upstream(self) -> str:
        return self.config.upstream

    def sampled(self, draw: float) -> bool:
        """Whether a request with uniform `draw` in [0, 1) is compared."""
        return self.rolled_back_at is None and draw < self.config.sample

    def record(self, now: float, mismatch: bool, what: str = "") -> bool:
        """One finished comparison; True when it rolls the candidate back."""
        self.compared += 1
        self.compared_since_start += 1
        if mismatch:
            self.mismatches += 1
            self.last_mismatch = what or self.last_mismatch
        self._window.append((now, mismatch))
        self._trim(now)
        if self.rolled_back_at is not None:
            return False
        bad = sum(1 for _, m in self._window if m)
        if bad and bad / len(self._window) > self.config.max_mismatch:
            self.rolled_back_at = now
            return True
        return False

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window
        while self._window and (self._window[0][0] < horizon or len(self._window) > MAX_SAMPLES):
            self._window.popleft()

    def window_counts(self, now: float) -> tuple[int, int]:
        """(comparisons, mismatches) within the window ending at `now`."""
        self._trim(now)
        return len(self._window), sum(1 for _, m in self._window if m)

    def state(self, now: float) -> State:
        if self.rolled_back_at is not None:
            return "rolled_back"
        if self.compared_since_start and now - self.started >= self.config.window:
            return "healthy"
        return "comparing"

    def roll_back(self, at: float) -> None:
        """Adopt a rollback another replica decided."""
        if self.rolled_back_at is None and at > self.reset_at:
            self.rolled_back_at = at

    def reset(self, now: float) -> None:
        """Put the candidate back: a fresh comparison period starts."""
        self.rolled_back_at = None
        self.reset_at = self.started = now
        self.compared_since_start = 0
        self._window.clear()

    def view(self, now: float) -> dict[str, object]:
        in_window, bad = self.window_counts(now)
        return {
            "upstream": self.upstream,
            "compare_with": self.config.compare_with,
            "state": self.state(now),
            "sample": self.config.sample,
            "max_mismatch": self.config.max_mismatch,
            "window_seconds": self.config.window,
            "compared_in_window": in_window,
            "mismatches_in_window": bad,
            "compared_total": self.compared,
            "mismatches_total": self.mismatches,
            "unresolved_total": self.unresolved,
            "last_mismatch": self.last_mismatch,
            "rolled_back_seconds_ago": None
            if self.rolled_back_at is None
            else round(now - self.rolled_back_at, 1),
        }


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What is compared of one answer: status class, length and digest; for .info the
    version and time the go command reads (other fields may legitimately differ)."""

    found: bool
    size: int
    digest: str
    info: tuple[str, str] | None = None

    def differs(self, other: Fingerprint) -> bool:
        if self.found != other.found:
            return True
        if not self.found:
            return False
        if self.info is not None and other.info is not None:
            return self.info != other.info
        return (self.size, self.digest) != (other.size, other.digest)


def info_fields(body: bytes) -> tuple[str, str] | None:
    """(Version, Time) of a .info answer; None when it is not such JSON."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    return str(doc.get("Version", "")), str(doc.get("Time", ""))
