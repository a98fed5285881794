"""Owned background tasks: named, referenced until done, failures logged, cancelled on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("goproxy_router.tasks")

CANCEL_ROUNDS = 10  # times a task still running at close is cancelled again
CANCEL_WAIT = 0.5  # seconds each round waits for the cancelled tasks to end


class TaskGroup:
    """Keeps references to background tasks so none is garbage-collected mid-flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed: %r", task.get_name(), exc)

    async def close(self, *, finish: tuple[str, ...] = (), grace: float = 5.0) -> None:
        """Cancel every task; those named with a prefix in `finish` (writes that must
        land, like artifact store commits) first get up to `grace` seconds to end."""
        pending = [t for t in self._tasks if t.get_name().startswith(finish)] if finish else []
        if pending:
            await asyncio.wait(pending, timeout=grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # A cancellation that lands as a timeout expires inside the task can come back
        # out of it as a TimeoutError (Python 3.11), which a retry loop then survives.
        # Such a task no longer counts the cancellation (`cancelling()` is 0) and is
        # cancelled again; one still winding down (its `finally`) is left to finish.
        for _ in range(CANCEL_ROUNDS):
            running = [t for t in tasks if not t.done()]
            if not running:
                break
            await asyncio.wait(running, timeout=CANCEL_WAIT)
            for task in running:
                if not task.done() and task.cancelling() == 0:
                    task.cancel()
        stuck = [t for t in tasks if not t.done()]
        if stuck:
            names = ", ".join(sorted(t.get_name() for t in stuck))
            log.error("background tasks did not stop when cancelled: %s", names)
        self._tasks = set(stuck)  # still referenced: never destroyed while pending
