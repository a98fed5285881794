"""Coalescing: one fetch per key at a time, whoever asks meanwhile shares it.

`SingleFlight` wraps a fetch function for answers read whole (metadata); `ZipFlight` is
the one for zips, whose followers read the leader's bytes as they arrive (a
`router.spooling.Tee`) instead of waiting for a result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from router.spooling import Reader, Tee

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one `fetch` in flight per key; followers get the leader's result (or its
    exception), and a cancelled follower does not cancel the leader."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._flights

    async def follow(self, key: str) -> T:
        """The result of the fetch in flight for `key` (which must be in flight)."""
        return await asyncio.shield(self._flights[key])

    async def lead(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` as `key`'s flight."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            result = await fetch()
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # followers see it; nobody is left with an unretrieved one
            raise
        finally:
            self._flights.pop(key, None)


class ZipFlight:
    """A zip being fetched by one request while others follow its bytes."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()  # the tee is published, or the fetch is over
        self.tee: Tee | None = None
        self.kept_open = False  # retired by the task keeping the zip, not by the leader
        self._waiting = 0
        self._closed = False
        self._released = False

    def publish(self, tee: Tee) -> None:
        self.tee = tee
        tee.hold()  # followers on their way attach before the file may go
        self.ready.set()

    def close(self) -> None:
        self._closed = True
        self.ready.set()
        self._release()

    async def follow(self, timeout: float) -> tuple[Tee | None, Reader | None]:
        """The leader's tee and a reader of it (None, None when the leader had none)."""
        self._waiting += 1
        try:
            if not self.ready.is_set():
                async with asyncio.timeout(timeout):
                    await self.ready.wait()
            tee = self.tee
            return tee, tee.attach() if tee is not None else None
        except TimeoutError:
            return None, None
        finally:
            self._waiting -= 1
            self._release()

    def _release(self) -> None:
        if self._closed and self._waiting == 0 and self.tee is not None and not self._released:
            self._released = True
            self.tee.unhold()
