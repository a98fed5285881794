"""The bucket as a tier of the gateway: memory -> disk -> bucket, backfilling on the way back.

`lookup` is asked on a disk miss for a `.zip`. A hit is either backfilled into the disk store
(read whole and checked first, so a bucket dying mid-object costs a fetch from the upstreams,
never a cut-off download) and then served from disk, or - with `serve: redirect`, for a public
zip - answered with a presigned URL. On a miss, the shared tier's Redis lock decides which
replica fetches from the upstreams; the others poll the bucket until that replica has
published the artifact (or the lock is gone: then they fetch themselves). The fetching replica
publishes the zip (`publish`) once the disk store has kept it, that is after its size, its
zip shape and (on verifying routes) its h1 hash were checked, and unlocks once published.

Every bucket failure is a miss, counted in `bucket_errors_total`; while the endpoint is down
the bucket layer's breaker fails calls at once, so a dead endpoint costs no per-request time.
Needs the `s3` extra (it imports `router.cache.bucket`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from router.cache.bucket import Bucket, BucketEntry, BucketError, BucketObject
from router.cache.disk import ArtifactStore
from router.cache.shared import SharedTier
from router.cache.tier import Artifact, ArtifactFile, ArtifactMeta, Backfilled, Redirect
from router.core.bucketing import MAX_REDIRECT_EXPIRY, BucketConfig, redirect_allowed
from router.tasks import TaskGroup

if TYPE_CHECKING:
    from router.observability import Metrics
    from router.spooling import Spools

log = logging.getLogger("goproxy_router.bucket_tier")

ZIP_LOCK_MS = 30_000  # how long one replica may hold the fetch of a zip before another tries
MAX_PENDING_UPLOADS = 256  # publishes queued beyond this are skipped (and counted)
POLL_FIRST, POLL_MAX = 0.05, 0.5  # seconds between a follower's looks at the bucket


class BucketObjectView:
    """A `TierObject` over a bucket object (bytes checked as they stream)."""

    def __init__(self, obj: BucketObject, meta: ArtifactMeta) -> None:
        self._obj = obj
        self.meta = meta

    def chunks(self) -> AsyncIterator[bytes]:
        return self._obj.chunks()

    async def close(self) -> None:
        await self._obj.close()


def _meta(entry: BucketEntry) -> ArtifactMeta:
    return ArtifactMeta(
        size=entry.size,
        sha256=entry.digest,
        content_type=entry.content_type,
        upstream=entry.metadata.get("upstream", "bucket"),
        module=entry.metadata.get("module") or None,
        stored=entry.stored,
    )


class BucketTier:
    """The `ArtifactTier` of one bucket, plus the fleet's once-per-artifact publishing."""

    name = "bucket"

    def __init__(
        self,
        config: BucketConfig,
        *,
        store: ArtifactStore,
        spools: Spools,
        metrics: Metrics,
        shared: SharedTier | None,
        owner: str,
        bucket: Bucket | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.bucket = bucket or Bucket(config)
        self.store = store
        self.spools = spools
        self.metrics = metrics
        self.shared = shared
        self.owner = owner
        self._sleep = sleep
        self._tasks = TaskGroup()
        self._claims: set[str] = set()  # keys this replica holds the fleet's fetch lock of
        self._uploading: set[str] = set()
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Make the client (no request). A profile the AWS files lack is logged and the
        gateway runs without the bucket (shown as down)."""
        try:
            await self.bucket.start()
            self.started = True
        except BucketError as exc:
            self._error(exc)
            log.error("bucket %s not used: %s", self.config.bucket, exc)
        self._gauge()

    async def watch(self, interval: float = 1.0) -> None:
        """Keep the `bucket_down` gauge current between requests."""
        while True:
            await asyncio.sleep(interval)
            self._gauge()

    async def close(self) -> None:
        await self._tasks.close(grace=5.0)
        if self.started:
            await self.bucket.close()

    # ------------------------------------------------------------------ the Tier protocol

    async def get(self, key: str) -> BucketObjectView | None:
        if not self.started:
            return None
        try:
            obj = await self.bucket.get(key)
        except BucketError as exc:
            self._error(exc)
            return None
        return BucketObjectView(obj, _meta(obj.entry)) if obj is not None else None

    async def put(self, key: str, value: ArtifactFile) -> bool:
        if not self.started:
            return False
        path, meta = value.path, value.meta
        before = self.bucket.stats.published
        try:
            await self.bucket.put_file(
                key,
                path,
                size=meta.size,
                sha256=meta.sha256,
                content_type=meta.content_type,
                metadata={"upstream": meta.upstream, "module": meta.module or ""},
            )
        except (BucketError, OSError) as exc:
            if isinstance(exc, BucketError):
                self._error(exc)
            else:
                self.metrics.bucket_errors.labels("put", "source_gone").inc()
            self.metrics.bucket_published.labels("failed").inc()
            return False
        fresh = self.bucket.stats.published > before
        self.metrics.bucket_published.labels("published" if fresh else "already_there").inc()
        return True

    async def forget(self, key: str) -> None:
        if self.started:
            try:
                await self.bucket.delete(key)
            except BucketError as exc:
                self._error(exc)

    # ------------------------------------------------------------------ the serving path

    async def lookup(
        self, key: str, *, private: bool, zip_request: bool, wait: float = ZIP_LOCK_MS / 1000
    ) -> Redirect | Backfilled | None:
        """On a disk miss: the bucket's copy (backfilled into the disk store, or a redirect),
        or None - then this replica fetches from the upstreams, holding the fleet's lock when
        it could take it. Waits up to `wait` seconds while another replica fetches."""
        if not self.started:
            return None
        waited, pause = 0.0, POLL_FIRST
        while True:
            try:
                entry = await self.bucket.head(key)
            except BucketError as exc:
                self._error(exc)
                return None
            if entry is not None:
                found = await self._hit(key, entry, private=private, zip_request=zip_request)
                self._result(found, waited)
                return found
            if self.shared is None or await self.shared.lock(key, self.owner, ms=ZIP_LOCK_MS):
                self._claims.add(key)
                self._result(None, waited)
                return None
            if waited >= wait:
                self._result(None, waited)
                return None  # the other replica is slow: fetch ourselves (no corruption)
            await self._sleep(pause)
            waited += pause
            pause = min(pause * 2, POLL_MAX)

    async def _hit(
        self, key: str, entry: BucketEntry, *, private: bool, zip_request: bool
    ) -> Redirect | Backfilled | None:
        if redirect_allowed(self.config.serve, zip_request=zip_request, private=private):
            expires = min(self.config.presign_expires, MAX_REDIRECT_EXPIRY)
            try:
                return Redirect(await self.bucket.presign_entry(entry, expires))
            except BucketError as exc:
                self._error(exc)
                return None
        return await self._backfill(key, entry)

    async def _backfill(self, key: str, entry: BucketEntry) -> Backfilled | None:
        """Read the object whole into a spool (size and sha256 checked) and keep it in the
        disk store; None when it cannot be (no room, the bucket failed, dangling entry)."""
        spool = self.spools.new(entry.size)
        if spool is None:
            self.metrics.bucket_errors.labels("get", "no_room").inc()
            return None
        meta = _meta(entry)
        try:
            obj = await self.bucket.open_data(entry)
            if obj is None:
                spool.discard()
                return None
            async with obj:
                async for chunk in obj.chunks():
                    await spool.write(chunk)
        except BucketError as exc:
            self._error(exc)
            spool.discard()
            return None
        except BaseException:
            spool.discard()
            raise
        # checked by Go's rules before it was published
        art = await self.store.commit_checked(spool, key, meta)
        if art is None:
            return None
        self.metrics.bucket_bytes.labels("down").inc(entry.size)
        return Backfilled(art)

    def publish(self, key: str, art: Artifact, path: Path) -> None:
        """Upload an artifact the disk store has just kept (complete and checked), then give
        up the fleet's lock on it. In the background; bounded."""
        if not self.started or key in self._uploading:
            self.settle(key)
            return
        if len(self._uploading) >= MAX_PENDING_UPLOADS:
            self.metrics.bucket_published.labels("skipped").inc()
            self.settle(key)
            return
        meta = ArtifactMeta.of(art)
        self._uploading.add(key)

        async def upload() -> None:
            try:
                if await self.put(key, ArtifactFile(path, meta)):
                    self.metrics.bucket_bytes.labels("up").inc(meta.size)
            finally:
                self._uploading.discard(key)
                self.settle(key)

        self._tasks.spawn(upload(), name="bucket-upload")

    def settle(self, key: str) -> None:
        """The fetch of `key` is over: unlock it for the fleet, unless its upload still runs
        (the upload unlocks when it is done)."""
        if key in self._uploading or key not in self._claims:
            return
        self._claims.discard(key)
        if self.shared is not None:
            self._tasks.spawn(self.shared.unlock(key), name="bucket-unlock")

    # ------------------------------------------------------------------ counting

    def _error(self, exc: BucketError) -> None:
        self.metrics.bucket_errors.labels(exc.op, exc.cause).inc()
        self._gauge()

    def _gauge(self) -> None:
        down = not self.started or not self.bucket.up
        self.metrics.bucket_down.set(1 if down else 0)

    def _result(self, found: Redirect | Backfilled | None, waited: float) -> None:
        if isinstance(found, Redirect):
            result = "redirect"
        elif isinstance(found, Backfilled):
            result = "waited" if waited else "hit"
        else:
            result = "miss"
        self.metrics.bucket_lookups.labels(result).inc()
