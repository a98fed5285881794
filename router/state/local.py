"""What this process knows about its upstreams, used to rank them on every request.

Everything here is in memory and synchronous, so ranking never waits on I/O.
With Redis configured, `router.fleet.selection.RedisSync` pushes this process's
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
    DecayedMedian,
    EjectionPolicy,
    Health,
    HeatWindow,
    Ranking,
    Scored,
    rank,
    score,
)

MAX_PENDING = 50_000
SHARED_RTT_FRESH = 30.0
# Probes of an upstream that was just added (at start, or by a reload): a first estimate
# from several samples, so one slow answer does not decide.
FIRST_PROBES = 3
# While an upstream has its first probes (at most this long after it was added), RTT is
# left out of the rankings it is in: the first probe to come back must not decide.
PENDING_SECONDS = 1.0
# A zip smaller than this says more about round trips than about bandwidth.
MIN_TRANSFER_BYTES = 64 << 10


@dataclass(slots=True)
class UpstreamLive:
    """Live facts about one upstream."""

    rtt: DecayedMedian
    bandwidth: DecayedMedian = field(default_factory=DecayedMedian)
    health: Health = field(default_factory=Health)
    last_sample: float = 0.0
    last_probe: float = float("-inf")
    probes_owed: int = FIRST_PROBES  # first measurement still to do
    added: float = 0.0
    shared_rtt: float | None = None
    bytes: int = 0
    url: str = ""


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
        self.rng = rng or random.Random()
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
        for gone in set(self._live) - set(self._upstreams):
            del self._live[gone]
        for name, up in self._upstreams.items():
            live = self._live.get(name)
            if live is None or live.url != up.url:  # new, or another server now: measure it
                live = UpstreamLive(DecayedMedian(tau=sel.rtt_decay), url=up.url, added=self.now())
                live.bandwidth.tau = sel.rtt_decay
                self._live[name] = live
            live.rtt.tau = live.bandwidth.tau = sel.rtt_decay

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
            up.name,
            self.rtt(up.name),
            self.cost(up.name),
            heat,
            live.health.state(now),
            up.tier,
            samples=live.rtt.samples,
            bandwidth=live.bandwidth.value,
            failures=live.health.consecutive_failures,
            pending=self._pending(up.name, now),
        )

    def _pending(self, name: str, now: float) -> bool:
        live = self._live[name]
        return (
            live.probes_owed > 0 and now - live.added < PENDING_SECONDS and self.rtt(name) is None
        )

    def scored(
        self, upstreams: Sequence[Upstream], module: str | None, *, transfer: bool = False
    ) -> list[Scored]:
        now = self.now()
        cands = [self.candidate(u, module, now) for u in upstreams]
        return score(cands, self.weights, transfer=transfer)

    def ranking(
        self,
        upstreams: Sequence[Upstream],
        module: str | None,
        *,
        prefer_fresh: bool = False,
        mode: str | None = None,
        transfer: bool = False,
    ) -> Ranking:
        """The order to try `upstreams` in for this request and why (`mode`: the pool's
        override; `transfer`: a zip, where bandwidth counts as well as RTT)."""
        fresh = ("L0", "L1") if prefer_fresh else ()
        mode = mode or self.mode
        if mode == "ordered":  # no scoring needed to keep the pool's order
            now = self.now()
            return rank(
                [Scored(self._plain(u, now), 1.0, 1.0, 0.0, 1.0) for u in upstreams],
                mode=mode,
                rng=self.rng,
                fresh_tiers=fresh,
            )
        scored = self.scored(upstreams, module, transfer=transfer)
        return rank(scored, mode=mode, rng=self.rng, fresh_tiers=fresh)

    def order(
        self,
        upstreams: Sequence[Upstream],
        module: str | None,
        *,
        prefer_fresh: bool = False,
        mode: str | None = None,
        transfer: bool = False,
    ) -> list[Scored]:
        """`ranking(...).order`: the candidates in the order to try them."""
        return self.ranking(
            upstreams, module, prefer_fresh=prefer_fresh, mode=mode, transfer=transfer
        ).order

    def _plain(self, up: Upstream, now: float) -> Candidate:
        live = self._live[up.name]
        health = live.health.state(now)
        return Candidate(
            up.name, self.rtt(up.name), self.cost(up.name), 0.0, health, up.tier, live.rtt.samples
        )

    # ------------------------------------------------------------------ learning

    def observe(self, name: str, *, failed: bool, rtt: float | None) -> None:
        """One finished attempt or probe. `rtt`: its time to first byte, for small answers
        only (info, mod, list, latest, probes; None for zips and without an answer). A
        failed attempt's time counts only when it is slower than the estimate (a timeout
        shows slowness; a quick 5xx is no evidence of speed)."""
        live = self._live.get(name)
        if live is None:
            return
        now = self.now()
        if rtt is not None and rtt >= 0:
            current = live.rtt.value
            if not failed or (current is not None and rtt > current):
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

    def transferred(self, name: str, nbytes: int, seconds: float) -> None:
        """A zip body of `nbytes` came from `name` in `seconds` (after its first byte):
        a bandwidth sample. Small bodies teach nothing about bandwidth and are ignored."""
        live = self._live.get(name)
        if live is None or nbytes < MIN_TRANSFER_BYTES or seconds <= 0:
            return
        live.bandwidth.observe(nbytes / seconds, self.now())

    def probes_due(self, interval: float) -> dict[str, int]:
        """Upstreams to probe now, with how many probes in a row: FIRST_PROBES for one
        never measured since it was added (at start or by a reload); one for an upstream
        with neither a sample nor a probe for `interval` seconds (not chosen, so not
        measured by requests), and for a half-open one not probed since its ejection."""
        now = self.now()
        due: dict[str, int] = {}
        for name, live in self._live.items():
            if live.probes_owed:
                due[name] = live.probes_owed
                continue
            health = live.health.state(now)
            if health == "ejected":
                continue
            quiet = now - max(live.last_sample, live.last_probe) >= interval
            if quiet or (health == "half-open" and live.last_probe < live.health.ejected_until):
                due[name] = 1
        return due

    def probed(self, name: str, *, ok: bool, rtt: float | None) -> None:
        """One probe's result: alive or not, and its time to first byte."""
        live = self._live.get(name)
        if live is None:
            return
        live.probes_owed = max(0, live.probes_owed - 1)
        live.last_probe = self.now()
        self.observe(name, failed=not ok, rtt=rtt if ok else None)

    def unmeasured(self) -> list[str]:
        """Upstreams without an RTT estimate of their own yet."""
        return [n for n, live in self._live.items() if live.rtt.value is None]

    def names(self) -> list[str]:
        return list(self._upstreams)
