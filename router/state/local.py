"""What this process knows about its upstreams, used to rank them on every request.

Everything here is in memory and synchronous, so ranking never waits on I/O.
With Redis configured, `router.state.redis.RedisSync` pushes this process's
observations out in batches and pulls the fleet's view in, in the background.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.core.model import Rules, Selection, Upstream
from router.core.selection import (
    Candidate,
    EjectionPolicy,
    Health,
    HeatWindow,
    PeakEwma,
    Scored,
    rank,
    score,
)

MAX_PENDING = 50_000
SHARED_RTT_FRESH = 30.0


@dataclass(slots=True)
class UpstreamLive:
    """Live facts about one upstream."""

    rtt: PeakEwma
    health: Health = field(default_factory=Health)
    last_sample: float = 0.0
    shared_rtt: float | None = None
    bytes: int = 0


class SelectionState:
    """Ranks candidates from live observations; records what every request taught."""

    def __init__(
        self,
        rules: Rules,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._live: dict[str, UpstreamLive] = {}
        self.cost_overrides: dict[str, float] = {}
        self.pending_heat: dict[tuple[str, int, str], float] = {}
        self.pending_ejections: dict[str, float] = {}
        self.dropped = 0
        self.shared = False  # set by the Redis sync: only then are observations queued
        self.apply_rules(rules)

    def apply_rules(self, rules: Rules) -> None:
        """Adopt a (re)loaded rule set; live facts of kept upstreams survive."""
        sel: Selection = rules.selection
        self.rules = rules
        self.weights = sel.weights
        self.mode = sel.mode
        self.policy = EjectionPolicy(
            sel.ejection.consecutive_failures, sel.ejection.base, sel.ejection.max
        )
        self.heat = getattr(self, "heat", None) or HeatWindow(window=sel.heat_window)
        if self.heat.window != sel.heat_window:
            self.heat = HeatWindow(window=sel.heat_window)
        self._upstreams = {u.name: u for u in rules.upstreams}
        for name in self._upstreams:
            live = self._live.get(name)
            if live is None:
                self._live[name] = UpstreamLive(PeakEwma(tau=sel.rtt_decay))
            else:
                live.rtt.tau = sel.rtt_decay

    def now(self) -> float:
        return self._clock()

    def live(self, name: str) -> UpstreamLive:
        return self._live[name]

    def cost(self, name: str) -> float:
        override = self.cost_overrides.get(name)
        if override is not None:
            return override
        up = self._upstreams.get(name)  # a checksum DB read from its own url is not one
        return up.cost_per_gb if up is not None else 0.0

    def rtt(self, name: str) -> float | None:
        live = self._live[name]
        if live.rtt.value is not None:
            return live.rtt.value
        return live.shared_rtt

    def candidate(self, up: Upstream, module: str | None, now: float) -> Candidate:
        live = self._live[up.name]
        heat = self.heat.heat(up.name, module, now) if module else 0.0
        return Candidate(
            up.name, self.rtt(up.name), self.cost(up.name), heat, live.health.state(now), up.tier
        )

    def scored(self, upstreams: Sequence[Upstream], module: str | None) -> list[Scored]:
        now = self.now()
        return score([self.candidate(u, module, now) for u in upstreams], self.weights)

    def order(
        self,
        upstreams: Sequence[Upstream],
        module: str | None,
        *,
        prefer_fresh: bool = False,
        mode: str | None = None,
    ) -> list[Scored]:
        """The order to try `upstreams` in for this request (`mode`: the pool's override)."""
        fresh = ("L0", "L1") if prefer_fresh else ()
        mode = mode or self.mode
        if mode == "ordered":  # no scoring needed to keep the pool's order
            now = self.now()
            return rank(
                [Scored(self._plain(u, now), 1.0, 1.0, 0.0, 1.0) for u in upstreams],
                mode=mode,
                rng=self._rng,
                fresh_tiers=fresh,
            )
        return rank(self.scored(upstreams, module), mode=mode, rng=self._rng, fresh_tiers=fresh)

    def _plain(self, up: Upstream, now: float) -> Candidate:
        health = self._live[up.name].health.state(now)
        return Candidate(up.name, self.rtt(up.name), self.cost(up.name), 0.0, health, up.tier)

    # ------------------------------------------------------------------ learning

    def observe(self, name: str, *, failed: bool, rtt: float | None) -> None:
        """One finished attempt: `rtt` is its time to first byte (None without an answer)."""
        live = self._live.get(name)
        if live is None:
            return
        now = self.now()
        if rtt is not None:
            live.rtt.observe(rtt, now)
            live.last_sample = now
        if failed:
            if live.health.failure(now, self.policy) and self.shared:
                self.pending_ejections[name] = live.health.ejected_until
        else:
            live.health.success(now, self.policy)

    def penalise(self, name: str) -> None:
        """An upstream served bytes that are provably wrong: eject it now, not after
        `consecutive_failures` (it is still tried when nothing else is left)."""
        live = self._live.get(name)
        if live is None:
            return
        now = self.now()
        health = live.health
        health.ejections += 1
        until = now + min(self.policy.base * health.ejections, self.policy.max)
        health.ejected_until = max(health.ejected_until, until)
        health.consecutive_failures = 0
        if self.shared:
            self.pending_ejections[name] = health.ejected_until

    def served(self, name: str, module: str | None, nbytes: int) -> None:
        """An answer from `name` reached a client: heat for the module, bytes for the bill."""
        live = self._live.get(name)
        if live is None:
            return
        live.bytes += nbytes
        if module:
            now = self.now()
            self.heat.add(name, module, now)
            if not self.shared:
                return
            key = (name, self.heat.bucket_of(now), module)
            if key in self.pending_heat or len(self.pending_heat) < MAX_PENDING:
                self.pending_heat[key] = self.pending_heat.get(key, 0.0) + 1.0
            else:
                self.dropped += 1

    def idle(self, name: str, interval: float) -> bool:
        """True when `name` had no sample for `interval` seconds or awaits a half-open probe."""
        live = self._live[name]
        now = self.now()
        return now - live.last_sample >= interval or live.health.state(now) == "half-open"

    def names(self) -> list[str]:
        return list(self._upstreams)
