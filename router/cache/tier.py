"""The one interface of every cache tier: a place answers are kept by cache key.

`Tier` is three calls - `get`, `put`, `forget` - over a key and what the tier keeps:
the metadata tiers (`AnswerTier`: memory, Redis) keep whole answers (`Entry`), the
artifact tiers (`ArtifactTier`: the disk store, the bucket) keep checked files, read
back as a stream checked against their size and sha256. Adapters: `router.cache.tiers`
(memory, Redis, disk); the bucket tier (`router.cache.bucket_tier`) is one itself.

A tier never raises on the request path: a failure is a miss (or a `put` that returns
False), counted by the tier itself. `tests/cache/test_tier_contract.py` holds every
tier to this, against a real redis-server, a real directory and a real S3 server.
The serving path also uses what each tier has beyond these three calls (stale reads,
locks, pins, redirects; see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from router.cache.memory import Entry

Kept = TypeVar("Kept", contravariant=True)
Found = TypeVar("Found", covariant=True)


@dataclass(frozen=True, slots=True)
class Artifact:
    """One artifact as the disk store indexes it (`router.cache.disk`)."""

    key: str
    digest: str
    size: int
    content_type: str | None
    upstream: str
    stored: float
    module: str | None
    checked: bool = False  # a zip checked by Go's rules before it was kept


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """What a tier knows of a kept artifact besides its bytes."""

    size: int
    sha256: str
    content_type: str | None
    upstream: str  # who served it first (a rollback forgets what a mirror served)
    module: str | None
    stored: float  # when it was first kept (unix time)

    @classmethod
    def of(cls, art: Artifact) -> ArtifactMeta:
        """What the disk store knows of one of its artifacts."""
        return cls(art.size, art.digest, art.content_type, art.upstream, art.module, art.stored)


@dataclass(frozen=True, slots=True)
class Redirect:
    """A tier hit answered with a URL the client fetches itself."""

    url: str  # a presigned GET URL: a credential for its lifetime, never logged


@dataclass(frozen=True, slots=True)
class Backfilled:
    """A tier hit copied into the disk store (serve it from there)."""

    artifact: Artifact


class TierObject(Protocol):
    """One artifact being read: its bytes are checked against `meta` as they stream (a
    mismatch raises instead of handing over the last chunk)."""

    meta: ArtifactMeta

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """A complete, checked file to keep, and what is known of it (`put` copies it)."""

    path: Path
    meta: ArtifactMeta


class Tier(Protocol[Kept, Found]):
    """Where answers are kept by cache key."""

    name: str

    async def get(self, key: str) -> Found | None:
        """What is kept for `key`, or None (a miss, or the tier failed)."""
        ...

    async def put(self, key: str, value: Kept) -> bool:
        """Keep `value` as `key`'s (replacing what was kept); whether it is kept."""
        ...

    async def forget(self, key: str) -> None:
        """Drop `key` (an artifact's bytes may stay while other keys use them)."""
        ...


AnswerTier = Tier[Entry, Entry]
"""Memory and Redis: whole answers, kept until their `stale_until`."""

ArtifactTier = Tier[ArtifactFile, TierObject]
"""The disk store and the bucket: immutable, checked artifacts."""


async def checked_stream(
    read: Callable[[], Awaitable[bytes]],
    size: int,
    sha256: str,
    corrupt: Callable[[int], Exception],
    whole: Callable[[], None] = lambda: None,
) -> AsyncIterator[bytes]:
    """The chunks `read` gives (b"" once there are no more), each handed over when the
    next has come, the last only once the whole is `size` bytes with `sha256` (then
    `whole()` is called): a mismatch raises `corrupt(bytes read)` instead of it."""
    digest, got = hashlib.sha256(), 0
    pending: bytes | None = None
    while chunk := await read():
        got += len(chunk)
        if got > size:
            break
        digest.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    if got != size or digest.hexdigest() != sha256:
        raise corrupt(got)
    whole()
    if pending is not None:
        yield pending
