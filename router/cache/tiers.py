"""The memory cache, the shared Redis tier and the disk store behind the one `Tier`
interface (`router.cache.tier`); the bucket tier is one by itself.

Each adapter is thin: what its tier does beyond `get`/`put`/`forget` (stale lookups
and purges in memory, locks in Redis, pins, eviction and retention on disk) stays on
the tier itself, for the serving path that needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from router.cache.disk import ArtifactStore, Reservation
from router.cache.memory import Entry, MemoryCache
from router.cache.shared import SharedTier
from router.cache.tier import ArtifactFile, ArtifactMeta, checked_stream

CHUNK = 1 << 20  # bytes read from a file at a time
REDIS_FOREVER = 30 * 86400  # the Redis TTL of an answer that never goes stale


class CorruptArtifact(Exception):
    """A kept file no longer matches its size or sha256."""


def redis_ttl(entry: Entry, now: float) -> float:
    """How long Redis keeps `entry`: until it may no longer be served stale."""
    return REDIS_FOREVER if entry.stale_until == float("inf") else entry.stale_until - now


class MemoryTier:
    """The in-process cache: an answer is there until evicted or past `stale_until`."""

    name = "memory"

    def __init__(self, cache: MemoryCache, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.clock = clock

    async def get(self, key: str) -> Entry | None:
        found = self.cache.get(key, self.clock())
        return found.entry if found is not None else None

    async def put(self, key: str, value: Entry) -> bool:
        return self.cache.put(key, value, self.clock())

    async def forget(self, key: str) -> None:
        self.cache.remove(key)


class RedisTier:
    """The shared tier: an answer is kept in Redis for as long as it may be served."""

    name = "redis"

    def __init__(self, shared: SharedTier, clock: Callable[[], float]) -> None:
        self.shared = shared
        self.clock = clock

    async def get(self, key: str) -> Entry | None:
        return await self.shared.get(key)

    async def put(self, key: str, value: Entry) -> bool:
        return await self.shared.put(key, value, redis_ttl(value, self.clock()))

    async def forget(self, key: str) -> None:
        await self.shared.forget(key)


class FileObject:
    """A `TierObject` over a kept file: read in large chunks off the event loop, its
    last chunk handed over only once size and sha256 match."""

    def __init__(self, fh: IO[bytes], meta: ArtifactMeta) -> None:
        self._fh = fh
        self.meta = meta

    async def chunks(self) -> AsyncIterator[bytes]:
        meta = self.meta
        try:
            read = functools.partial(asyncio.to_thread, self._fh.read, CHUNK)
            async for chunk in checked_stream(read, meta.size, meta.sha256, self._corrupt):
                yield chunk
        finally:
            await self.close()

    def _corrupt(self, got: int) -> CorruptArtifact:
        if got != self.meta.size:
            return CorruptArtifact(f"{got} bytes read, {self.meta.size} kept")
        return CorruptArtifact("sha256 differs from what was kept")

    async def close(self) -> None:
        self._fh.close()


class DiskTier:
    """The artifact store: a kept file is copied in (checked against its sha256 on the
    way) and read back as a stream."""

    name = "disk"

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    async def get(self, key: str) -> FileObject | None:
        try:
            kept = await asyncio.to_thread(self.store.get, key)
        except OSError:
            kept = None
        if kept is None:
            return None
        art, path = kept
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except OSError as exc:
            self.store.health.failed("disk", "reading an artifact", exc)
            await self.forget(key)  # its bytes are gone: a miss from now on
            return None
        return FileObject(fh, ArtifactMeta.of(art))

    async def put(self, key: str, value: ArtifactFile) -> bool:
        meta = value.meta
        if not self.store.reserve(meta.size):
            return False
        spool = self.store.spool(Reservation(self.store, meta.size))
        try:
            await asyncio.to_thread(_copy, value.path, spool.write_now)
        except OSError:
            spool.discard()
            return False
        # a file changed since it was checked, or a failed disk: nothing kept
        return await self.store.commit_checked(spool, key, meta) is not None

    async def forget(self, key: str) -> None:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.store.forget, key)


def _copy(path: Path, write: Callable[[bytes], None]) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            write(chunk)
