"""Mirror rollouts, live: which requests are compared, what came of it, who is rolled back.

The pure decisions are `router.core.rollout`; the comparison fetches are made by the
answer cache (`AnswerCache._compare`). With Redis, a rollback decided by one replica reaches
every replica within a second, and so does `goproxy-router rollout reset NAME`:

- `goproxy-router:rollouts` (hash): `<candidate>|rolled_back` and `<candidate>|reset`, each the
  unix time of the latest one; the later of the two wins on every replica
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from router.core.model import Rules
from router.core.protocol import Kind
from router.core.rollout import STATES, RolloutTracker
from router.observability import Metrics
from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.rollouts")

REDIS_KEY = "goproxy-router:rollouts"
SYNC_SECONDS = 1.0
_COMPARED_KINDS = (Kind.INFO, Kind.MOD, Kind.ZIP)


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
        rng: random.Random | None = None,
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self.trackers: dict[str, RolloutTracker] = {}
        self._unpublished: dict[str, str] = {}
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
            self._unpublished[f"{tracker.upstream}|rolled_back"] = str(now)
            self._rolled_back(tracker.upstream)
        self.update_gauges()

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
        self._unpublished[f"{name}|reset"] = str(now)
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

    # ------------------------------------------------------------------ replicas

    async def sync(self, client: Any) -> None:
        """Publish this replica's rollbacks and resets; adopt everyone else's."""
        for field_name, value in list(self._unpublished.items()):
            await client.hset(REDIS_KEY, field_name, value)
            self._unpublished.pop(field_name, None)
        shared = {_text(k): _text(v) for k, v in (await client.hgetall(REDIS_KEY)).items()}
        for name, tracker in self.trackers.items():
            rolled_back = _when(shared.get(f"{name}|rolled_back"))
            reset = _when(shared.get(f"{name}|reset"))
            if reset > tracker.reset_at and reset >= (tracker.rolled_back_at or 0.0):
                tracker.reset(reset)
                log.warning("rollout %s reset by another replica or the CLI", name)
            if rolled_back > tracker.reset_at and tracker.rolled_back_at is None:
                tracker.roll_back(rolled_back)
                log.error("rollout %s rolled back by another replica", name)
                self._rolled_back(name)
        self.update_gauges()

    async def sync_loop(self, client: Any) -> None:
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            if not self.trackers:
                continue
            try:
                await self.sync(client)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("rollout sync: redis unavailable (%s)", type(exc).__name__)


async def publish_reset(client: Any, name: str, now: float | None = None) -> None:
    """`goproxy-router rollout reset NAME` through Redis: every replica within a second."""
    await client.hset(REDIS_KEY, f"{name}|reset", str(time.time() if now is None else now))


def _when(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
