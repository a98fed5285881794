"""`goproxy-router purge`: a module's shared mutable cache entries dropped, and every
replica told (channel `purge`) to drop its own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from router.fleet import keys
from router.fleet.loop import FAILURES, every


async def purge(client: Any, module: str) -> int:
    """Drop a module's shared mutable entries and tell every replica to drop theirs;
    how many replicas heard it."""
    index = keys.modkeys(module)
    names = await client.smembers(index)
    if names:
        await client.delete(*names)
    await client.delete(index)
    receivers: int = await client.publish(keys.PURGE_CHANNEL, module)
    return receivers


async def listen_for_purges(client: Any, apply: Callable[[str], None]) -> None:
    """Apply purges broadcast by `goproxy-router purge`, listening again with backoff
    whenever the subscription breaks; `client` is closed when the listening ends."""

    async def listen() -> None:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(keys.PURGE_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    data = message.get("data")
                    apply(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()

    try:
        await every(0.5, listen, what="purge listener", max_backoff=10.0)
    finally:  # the listener has its own client (no read timeout): it goes with it
        with contextlib.suppress(*FAILURES):
            await client.aclose()
