"""Serving what is stale: stale-while-revalidate and stale-if-error, as wrappers
around a fetch function.

Lifetimes themselves (how long fresh, how long stale) are decided by
`router.core.lifetimes`; this only acts on them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from router.cache.memory import Entry, MemoryCache
from router.core.fallback import Failure
from router.tasks import TaskGroup

NEVER_STALE_ON = frozenset({404, 410, 403})
"""Failures that are answers: an older copy is not served in their place."""


class Revalidator:
    """Stale-while-revalidate: at most one background refresh per key at a time."""

    def __init__(self, tasks: TaskGroup) -> None:
        self._tasks = tasks
        self._refreshing: set[str] = set()

    def refresh_later(self, key: str, fetch: Callable[[], Awaitable[object]]) -> None:
        """Run `fetch` in the background unless `key` is already being refreshed."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                await fetch()
            finally:
                self._refreshing.discard(key)

        self._tasks.spawn(refresh(), name="cache-refresh")


def stale_if_error(
    memory: MemoryCache | None, key: str, failure: Failure, now: float
) -> Entry | None:
    """The stale copy to answer with instead of `failure`, when it is an error (not an
    answer such as a not-found) and the copy is within its stale-if-error time."""
    if failure.status in NEVER_STALE_ON or memory is None:
        return None
    return memory.get_stale(key, now)
