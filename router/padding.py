"""Make locally answered not-founds take as long as real ones.

A request for another tenant's private module is answered 404 without asking
any upstream; answered instantly, its timing would tell that the path is
somebody's private module. This keeps a small window of how long real
upstream not-founds took and delays local ones by a sample of it.
"""

from __future__ import annotations

import random
from collections import deque


class NotFoundTimer:
    """A bounded window of recent upstream not-found durations (seconds)."""

    def __init__(self, size: int = 128, *, rng: random.Random | None = None) -> None:
        self._window: deque[float] = deque(maxlen=size)
        self._rng = rng or random.Random()

    def record(self, seconds: float) -> None:
        if 0 <= seconds < 30:
            self._window.append(seconds)

    def sample(self) -> float:
        """A delay drawn from the window (a few ms when nothing is known yet)."""
        if not self._window:
            return self._rng.uniform(0.002, 0.02)
        return self._rng.choice(self._window) * self._rng.uniform(0.9, 1.1)
