"""The one background loop of everything shared through Redis: a step every interval;
after a failed step, the next waits twice as long (up to a cap); the first success
goes back to the interval. Requests never wait on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

log = logging.getLogger("goproxy_router.redis")

FAILURES = (RedisError, OSError, TimeoutError)
MAX_BACKOFF = 5.0


async def every(
    interval: float,
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    on_result: Callable[[bool], None] = lambda ok: None,
    max_backoff: float = MAX_BACKOFF,
) -> None:
    """Run `step` every `interval` seconds for ever (until cancelled). `on_result` hears
    whether each step reached Redis; a failure is logged once per outage."""
    backoff = 0.0
    while True:
        await asyncio.sleep(backoff or interval)
        try:
            await step()
        except FAILURES as exc:
            if not backoff:
                log.warning("%s: redis unavailable (%s); retrying with backoff", what, _name(exc))
            backoff = min(max(0.25, backoff * 2), max_backoff)
            on_result(False)
            continue
        if backoff:
            log.warning("%s: redis answers again", what)
        backoff = 0.0
        on_result(True)


def _name(exc: BaseException) -> str:
    return type(exc).__name__
