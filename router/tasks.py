"""Owned background tasks: named, referenced until done, failures logged, cancelled on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("goproxy_router.tasks")


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
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
