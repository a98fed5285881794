"""One clock tests move by hand: every part that reads time takes it as an argument."""

from __future__ import annotations


class Clock:
    """Wall-clock seconds that only move when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
