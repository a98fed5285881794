"""The interface of an artifact tier: where immutable, checked artifacts are kept by cache key.

The bucket tier (`router.cache.bucket_tier`) satisfies it; the disk store could too (its `get`
is a file, its `put` a rename). A tier never raises on the request path: a failure is a miss
(or a `put` that returns False), counted by the tier itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from router.cache.disk import Artifact


@dataclass(frozen=True, slots=True)
class ArtifactMeta:
    """What a tier knows of a kept artifact besides its bytes."""

    size: int
    sha256: str
    content_type: str | None
    upstream: str  # who served it first (a rollback forgets what a mirror served)
    module: str | None
    stored: float  # when it was first kept (unix time)


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


class ArtifactTier(Protocol):
    name: str

    async def get(self, key: str) -> TierObject | None:
        """The artifact of `key`, or None (a miss, or the tier failed)."""
        ...

    async def put(self, key: str, path: Path, meta: ArtifactMeta) -> bool:
        """Keep the complete, checked file at `path` as `key`'s artifact; whether it is kept."""
        ...

    async def forget(self, key: str) -> None:
        """Drop `key` (its bytes may stay while other keys use them)."""
        ...
