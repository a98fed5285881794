"""Rollout rollbacks and resets shared by replicas (key `rollouts`, a hash of
`<candidate>|rolled_back` and `<candidate>|reset`, each the unix time of the latest one):
the later of the two wins on every replica, within a second."""

from __future__ import annotations

import logging
import time
from typing import Any

from router.fleet import keys
from router.fleet.loop import every
from router.rollouts import Rollouts

log = logging.getLogger("goproxy_router.rollouts")

SYNC_SECONDS = 1.0


async def sync(rollouts: Rollouts, client: Any) -> None:
    """Publish this replica's rollbacks and resets; adopt everyone else's."""
    if not rollouts.trackers:
        return
    for field_name, value in list(rollouts.unpublished.items()):
        await client.hset(keys.ROLLOUTS, field_name, value)
        rollouts.unpublished.pop(field_name, None)
    shared = {_text(k): _text(v) for k, v in (await client.hgetall(keys.ROLLOUTS)).items()}
    for name, tracker in rollouts.trackers.items():
        rolled_back = _when(shared.get(f"{name}|rolled_back"))
        reset = _when(shared.get(f"{name}|reset"))
        if reset > tracker.reset_at and reset >= (tracker.rolled_back_at or 0.0):
            tracker.reset(reset)
            log.warning("rollout %s reset by another replica or the CLI", name)
        if rolled_back > tracker.reset_at and tracker.rolled_back_at is None:
            tracker.roll_back(rolled_back)
            log.error("rollout %s rolled back by another replica", name)
            rollouts.rolled_back_elsewhere(name)
    rollouts.update_gauges()


async def sync_loop(rollouts: Rollouts, client: Any) -> None:
    async def step() -> None:
        await sync(rollouts, client)

    await every(SYNC_SECONDS, step, what="rollout sync")


async def publish_reset(client: Any, name: str, now: float | None = None) -> None:
    """`goproxy-router rollout reset NAME` through Redis: every replica within a second."""
    await client.hset(keys.ROLLOUTS, f"{name}|reset", str(time.time() if now is None else now))


def _when(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
