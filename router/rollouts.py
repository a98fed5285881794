"""Mirror rollouts, live: which requests are compared, what came of it, who is rolled back.

The pure decisions are `router.core.rollout` and `router.core.plan` (which requests are
compared); the comparison fetches are `router.serving.comparing`. With Redis, rollbacks and
resets reach every replica within a second (`router.fleet.rollouts`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.core.model import Rules
from router.core.rollout import STATES, RolloutTracker
from router.observability import Metrics
from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.rollouts")


@dataclass(frozen=True, slots=True)
class RolloutPick:
    """A request chosen for comparison: its candidate and the baseline to compare with."""

    tracker: RolloutTracker
    candidate: UpstreamClient
    baseline: UpstreamClient


class Rollouts:
    """Every rollout of the current rules, with state that survives reloads."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self.trackers: dict[str, RolloutTracker] = {}
        self.unpublished: dict[str, str] = {}  # rollbacks and resets for the fleet
        self.on_rollback: list[Callable[[str], None]] = []  # e.g. drop its cached answers

    def apply_rules(self, rules: Rules) -> None:
        kept: dict[str, RolloutTracker] = {}
        now = self._clock()
        for cfg in rules.rollouts:
            old = self.trackers.get(cfg.upstream)
            if old is not None and old.config.compare_with == cfg.compare_with:
                old.config = cfg
                kept[cfg.upstream] = old
            else:
                kept[cfg.upstream] = RolloutTracker(cfg, started=now)
        for gone in set(self.trackers) - set(kept):
            for st in STATES:
                with contextlib.suppress(KeyError):
                    self.metrics.rollout_state.remove(gone, st)
        self.trackers = kept
        self.update_gauges()

    # ------------------------------------------------------------------ the request path
    # (which requests are compared is decided by router.core.plan.rank)

    def rolled_back(self, name: str) -> bool:
        tracker = self.trackers.get(name)
        return tracker is not None and tracker.rolled_back_at is not None

    def record(self, tracker: RolloutTracker, mismatch: bool, what: str) -> None:
        """One finished comparison."""
        result = "mismatch" if mismatch else "match"
        self.metrics.rollout_comparisons.labels(tracker.upstream, result).inc()
        now = self._clock()
        if mismatch:
            log.warning(
                "rollout %s: differs from %s on %s",
                tracker.upstream,
                tracker.config.compare_with,
                what,
            )
        if tracker.record(now, mismatch, what):
            bad_in, total_in = tracker.window_counts(now)[::-1]
            log.error(
                "rollout %s rolled back: %d of %d answers in %gs differ from %s (max %g)",
                tracker.upstream,
                bad_in,
                total_in,
                tracker.config.window,
                tracker.config.compare_with,
                tracker.config.max_mismatch,
            )
            self.unpublished[f"{tracker.upstream}|rolled_back"] = str(now)
            self._rolled_back(tracker.upstream)
        self.update_gauges()

    def rolled_back_elsewhere(self, name: str) -> None:
        """Another replica rolled `name` back."""
        self._rolled_back(name)

    def _rolled_back(self, name: str) -> None:
        for hook in self.on_rollback:
            hook(name)

    def unresolved(self, tracker: RolloutTracker) -> None:
        tracker.unresolved += 1
        self.metrics.rollout_comparisons.labels(tracker.upstream, "unresolved").inc()

    def reset(self, name: str) -> bool:
        tracker = self.trackers.get(name)
        if tracker is None:
            return False
        now = self._clock()
        tracker.reset(now)
        self.unpublished[f"{name}|reset"] = str(now)
        log.warning("rollout %s reset: comparing again", name)
        self.update_gauges()
        return True

    def update_gauges(self) -> None:
        now = self._clock()
        for name, tracker in self.trackers.items():
            current = tracker.state(now)
            for st in STATES:
                self.metrics.rollout_state.labels(name, st).set(1 if st == current else 0)

    def view(self) -> list[dict[str, object]]:
        now = self._clock()
        return [t.view(now) for t in self.trackers.values()]
