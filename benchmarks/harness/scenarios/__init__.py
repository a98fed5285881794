"""The scenarios, in report order: each module has TITLE and run(bench) -> Section."""

from __future__ import annotations

from types import ModuleType

from . import (
    cached,
    latency,
    passthrough,
    realclient,
    selection,
    simulations,
    soak,
    verify,
    workers,
    zips,
)

SCENARIOS: dict[str, ModuleType] = {
    "realclient": realclient,
    "passthrough": passthrough,
    "cached": cached,
    "zips": zips,
    "workers": workers,
    "latency": latency,
    "soak": soak,
    "selection": selection,
    "verify": verify,
    "simulations": simulations,
}
