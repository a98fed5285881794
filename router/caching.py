"""Serving from cache: memory, the artifact store and the shared Redis tier, with
coalesced misses, stale-while-revalidate and stale-if-error.

Sits between the decision (pool, ordered upstreams; the access check has
already run) and the pool walk. Every answer served without an upstream call
carries `Age` and `X-Router-Upstream: cache`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from router.admitting import keeps
from router.cache.disk import ArtifactStore, Spool, SpoolBudget, check_module_zip
from router.cache.health import StorageHealth
from router.cache.memory import Entry, MemoryCache
from router.cache.shared import SharedTier
from router.cache.tier import Redirect
from router.checksums import ChecksumUnavailable, Verification
from router.comparing import Comparer
from router.core.admission import NOT_A_VERSION, Admission
from router.core.fallback import Attempt, Failure, Outcome
from router.core.lifetimes import cache_key, lifetime
from router.core.model import Cache, Pool
from router.core.protocol import MAX_BYTES, Kind, ModuleRequest, SumdbRequest
from router.gateway import (
    UPSTREAM_HEADER,
    Check,
    Served,
    failure_response,
    respond,
    supported_probe,
    text_response,
    walk,
)
from router.observability import Metrics
from router.policygate import ZIP_GATE, ZipGate
from router.rollouts import RolloutPick, Rollouts
from router.sending import send_tee
from router.spooling import Reader, Spools, Tee
from router.tasks import TaskGroup
from router.tracing import Tracer
from router.upstream import UpstreamAnswer, UpstreamClient

if TYPE_CHECKING:
    from router.cache.bucket_tier import BucketTier
    from router.retention import BucketAccess

log = logging.getLogger("goproxy_router.caching")

SMALL_ZIP = 1 << 20  # zips up to this size may live in the memory cache
FOLLOWER_WAIT = 1.0  # seconds a replica waits for another replica's fetch


@dataclass(slots=True)
class Job:
    """One request, decided: what to fetch, from whom, on whose behalf."""

    request: ModuleRequest | SumdbRequest
    pool: Pool
    clients: Sequence[UpstreamClient]
    served: Served
    headers: Mapping[str, str]
    private: bool
    verification: Verification | None = None  # verify-before-serve (.mod, .zip)
    check: Check | None = None  # another acceptance test (checked sumdb answers)
    rollout: RolloutPick | None = None  # compare the candidate with its baseline
    admission: Admission = NOT_A_VERSION  # not admitted: not kept in the store or Redis

    @property
    def key(self) -> str:
        verified = self.verification is not None
        return cache_key(self.request, self.pool.name, private=self.private, verified=verified)


class AnswerCache:
    """Cache lookups and coalesced fetches for one gateway process."""

    def __init__(
        self,
        cfg: Cache,
        metrics: Metrics,
        tasks: TaskGroup,
        *,
        memory: MemoryCache | None,
        store: ArtifactStore | None,
        shared: SharedTier | None = None,
        spools: Spools | None = None,
        stall: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.tasks = tasks
        self.memory = memory
        self.store = store
        self.shared = shared
        self._clock = clock
        self._meta_flights: dict[str, asyncio.Future[UpstreamAnswer | Failure]] = {}
        self._zip_flights: dict[str, ZipFlight] = {}
        self._refreshing: set[str] = set()
        self.owner = self._owner = uuid.uuid4().hex[:12]
        self.spools = spools or Spools(SpoolBudget(cfg.spool, store), StorageHealth(), store=store)
        self.stall = stall
        self._direct: dict[str, int] = {}  # upstream -> zips streamed at a client's pace
        self.tracer: Tracer = Tracer()
        self.rollouts: Rollouts | None = None
        self.comparer: Comparer | None = None
        self.bucket: BucketTier | None = None  # behind the store (set by cachesetup)
        self.bucket_access: BucketAccess | None = None  # last access in Redis (store gc)
        # looks at every whole zip before it is marked checked, kept or served (licences)
        self.inspect: Callable[[str, str, Path], Awaitable[None]] | None = None

    @property
    def keeps_nothing(self) -> bool:
        """No tier at all (memory 0, no dir): plain requests need none of this."""
        return self.memory is None and self.store is None and self.shared is None

    def use_rollouts(self, rollouts: Rollouts) -> None:
        """Compare sampled requests for `rollouts`; forget what a rolled-back one served."""
        self.rollouts = rollouts
        self.comparer = Comparer(self, rollouts)
        rollouts.on_rollback.append(self.drop_upstream)

    # ------------------------------------------------------------------ entry point

    def fast_hit(
        self, request: ModuleRequest | SumdbRequest, key: str, served: Served
    ) -> web.Response | None:
        """A fresh memory hit, answered before any upstream ranking (None otherwise)."""
        if self.memory is None:
            return None
        now = self._clock()
        entry = self.memory.get_fresh(key, now)
        if entry is None:
            return None  # serve() looks again, and records the miss, after ranking
        self.metrics.cache_requests.labels(request.kind.value, "hit").inc()
        served.cache, served.upstream = "hit", "cache"
        return entry_response(entry, now)

    async def serve(self, http: web.Request, job: Job) -> web.StreamResponse:
        request = job.request
        if isinstance(request, SumdbRequest) and request.is_supported_probe:
            return supported_probe(request, job.clients)
        kind = request.kind.value
        key = job.key
        now = self._clock()
        hit = self._memory_hit(http, job, key, now)
        if hit is not None:
            return hit
        if request.immutable and self.store is not None:
            found = self.store.get(key)
            if found is not None:
                art, path = found
                tee = Tee.of_file(path, art.size, content_type=art.content_type, upstream="cache")
                reader = tee.attach() if tee is not None else None
                if tee is not None and reader is not None:
                    self._count(kind, "hit", job)
                    with self.store.pinned(key):  # not evicted under this client
                        resp = await self._send(
                            http, job, tee, reader, stored=art.stored, path=path
                        )
                    if tee.unreadable:
                        self.store.forget(key)  # fetch it again next time
                    return resp
                self.store.forget(key)  # its file is gone: fetch it again
        if http.method == "HEAD":
            return await self._passthrough(http, job)
        if request.kind is Kind.ZIP:
            return await self._zip_miss(http, job, key)
        return await self._meta_miss(http, job, key)

    async def cached(
        self,
        http: web.Request,
        request: ModuleRequest | SumdbRequest,
        pool: Pool,
        key: str,
        served: Served,
    ) -> web.StreamResponse | None:
        """What a tier holds for `key`, fresh or stale, without asking any upstream and
        without refreshing (offline mode, `router.jobviews`); None when none holds it."""
        if isinstance(request, SumdbRequest) and request.is_supported_probe:
            return None
        job = Job(request, pool, (), served, {}, private=False)
        now = self._clock()
        look = self.memory.get(key, now) if self.memory is not None else None
        if look is not None:
            self._count(request.kind.value, "hit", job)
            return entry_response(look.entry, now)
        found = self.store.get(key) if request.immutable and self.store is not None else None
        if found is not None:
            art, path = found
            tee = Tee.of_file(path, art.size, content_type=art.content_type, upstream="cache")
            reader = tee.attach() if tee is not None else None
            if tee is not None and reader is not None:
                self._count(request.kind.value, "hit", job)
                return await self._send(http, job, tee, reader, stored=art.stored)
        shared = self.shared is not None and request.kind is not Kind.ZIP
        entry = await self.shared.get(key) if shared and self.shared is not None else None
        if entry is not None:
            self._count(request.kind.value, "hit", job)
            return entry_response(entry, now)
        return None

    def _memory_hit(
        self, http: web.Request, job: Job, key: str, now: float
    ) -> web.StreamResponse | None:
        if self.memory is None:
            return None
        look = self.memory.get(key, now)
        if look is None:
            return None
        if look.fresh:
            self._count(job.request.kind.value, "hit", job)
            return entry_response(look.entry, now)
        self._count(job.request.kind.value, "stale", job)
        self._refresh_later(job, key)
        return entry_response(look.entry, now)

    def _count(self, kind: str, result: str, job: Job) -> None:
        self.metrics.cache_requests.labels(kind, result).inc()
        job.served.cache = result
        if result in ("hit", "stale", "stale_if_error"):
            job.served.upstream = "cache"

    async def walk_job(self, job: Job, *, method: str, stream: bool) -> UpstreamAnswer | Failure:
        """The pool walk for `job` (see `router.gateway.walk`), with its acceptance test."""
        check = job.check if method == "GET" else None  # a HEAD has no body to check
        if job.verification is not None and method == "GET":
            job.verification.start()  # the checksum lookup runs while the artifact comes
            check = job.verification.check
        return await walk(
            job.request,
            job.pool,
            job.clients,
            job.served,
            method=method,
            stream=stream,
            headers=job.headers,
            tracer=self.tracer,
            check=check,
        )

    async def _passthrough(self, http: web.Request, job: Job) -> web.StreamResponse:
        result = await self.walk_job(job, method=http.method, stream=False)
        if isinstance(result, Failure):
            return failure_response(result)
        return await respond(http, result, job.served)

    # ------------------------------------------------------------------ metadata

    async def _meta_miss(self, http: web.Request, job: Job, key: str) -> web.StreamResponse:
        kind = job.request.kind.value
        flight = self._meta_flights.get(key)
        if flight is not None:
            self._count(kind, "coalesced", job)
            self.metrics.coalesced.inc()
            result = await asyncio.shield(flight)
        else:
            shared = await self._shared_lookup(job, key)
            if shared is not None:
                self._count(kind, "hit", job)
                return entry_response(shared, self._clock())
            self._count(kind, "miss", job)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[UpstreamAnswer | Failure] = loop.create_future()
            self._meta_flights[key] = future
            try:
                result = await self._fetch_meta(job, key)
                future.set_result(result)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # followers see it; nobody is left with an unretrieved one
                raise
            finally:
                self._meta_flights.pop(key, None)
        return self._meta_response(job, key, result)

    async def _shared_lookup(self, job: Job, key: str) -> Entry | None:
        """The shared tier's answer, or another replica's fetch awaited briefly."""
        if self.shared is None or not job.admission.admitted:
            return None  # a version not admitted is never in Redis
        now = self._clock()
        entry = await self.shared.get(key)
        if entry is not None and now < entry.fresh_until:
            self._remember(key, entry, now)
            return entry
        if not await self.shared.lock(key, self._owner):
            self.metrics.coalesced.inc()
            entry = await self.shared.wait_for(key, FOLLOWER_WAIT)
            if entry is not None:
                self._remember(key, entry, self._clock())
                return entry
        return None

    async def _fetch_meta(self, job: Job, key: str) -> UpstreamAnswer | Failure:
        try:
            try:
                result: UpstreamAnswer | Failure
                if job.rollout is not None and self.comparer is not None:
                    result = await self.comparer.meta(job, job.rollout)
                else:
                    result = await self.walk_job(job, method="GET", stream=False)
            except ChecksumUnavailable as exc:
                return Failure(502, str(exc), None)  # fail closed, never cached
            self.store_meta(job, key, result)
            return result
        finally:
            if self.shared is not None:
                self.tasks.spawn(self.shared.unlock(key), name="cache-unlock")

    def store_meta(self, job: Job, key: str, result: UpstreamAnswer | Failure) -> None:
        now = self._clock()
        ctype: str | None
        if isinstance(result, Failure):
            status, body, ctype, upstream = (
                result.status,
                result.reason,
                "text/plain; charset=utf-8",
                result.upstream,
            )
            body_bytes = (" ".join(body.split())[:500] + "\n").encode()
        else:
            status, body_bytes, ctype, upstream = (
                200,
                result.body or b"",
                result.content_type,
                result.upstream,
            )
        life = lifetime(job.request, status, self.cfg)
        if life is None:
            return
        entry = Entry(
            status=status,
            body=body_bytes,
            content_type=ctype,
            upstream=upstream or "",
            stored=now,
            fresh_until=now + life.fresh,
            stale_until=now + max(life.fresh, life.stale_if_error + life.fresh),
            module=job.request.module,
            mutable=not job.request.immutable or status != 200,
        )
        self._remember(key, entry, now)
        if (
            self.shared is not None
            and job.request.kind is not Kind.ZIP
            and keeps(self.metrics, job.admission, "redis")
        ):
            ttl = entry.stale_until - now if entry.stale_until != float("inf") else 30 * 86400
            self.tasks.spawn(self.shared.put(key, entry, ttl), name="cache-share")
        if (
            self.store is not None
            and job.request.immutable
            and status == 200
            and job.request.kind is not Kind.ZIP  # zips are committed by _keep_zip
            and keeps(self.metrics, job.admission, "disk")
        ):
            self.tasks.spawn(
                self._keep(key, body_bytes, ctype, upstream or "", job.request.module),
                name="store-put",
            )

    async def _keep(
        self, key: str, body: bytes, ctype: str | None, upstream: str, module: str | None
    ) -> None:
        """Write an immutable answer to the store, unless its upstream was rolled back
        meanwhile (the rollback's drop may already have run)."""
        assert self.store is not None
        await self.store.put_bytes(key, body, content_type=ctype, upstream=upstream, module=module)
        if self.rollouts is not None and self.rollouts.rolled_back(upstream):
            self.store.forget(key)

    def _remember(self, key: str, entry: Entry, now: float) -> None:
        if self.memory is not None:
            self.memory.put(key, entry, now)

    def _meta_response(
        self, job: Job, key: str, result: UpstreamAnswer | Failure
    ) -> web.StreamResponse:
        now = self._clock()
        if isinstance(result, Failure):
            if result.status not in (404, 410, 403) and self.memory is not None:
                stale = self.memory.get_stale(key, now)
                if stale is not None:
                    self._count(job.request.kind.value, "stale_if_error", job)
                    return entry_response(stale, now)
            return failure_response(result)
        job.served.upstream = job.served.upstream or result.upstream
        job.served.status, job.served.bytes = 200, len(result.body or b"")
        headers = {UPSTREAM_HEADER: result.upstream}
        if result.content_type:
            headers["Content-Type"] = result.content_type
        return web.Response(status=200, body=result.body or b"", headers=headers)

    def _refresh_later(self, job: Job, key: str) -> None:
        """Stale-while-revalidate: at most one background refresh per key."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                shadow = dataclasses.replace(job, served=Served(), rollout=None)
                await self._fetch_meta(shadow, key)
            finally:
                self._refreshing.discard(key)

        self.tasks.spawn(refresh(), name="cache-refresh")

    # ------------------------------------------------------------------ zips

    async def _zip_miss(
        self, http: web.Request, job: Job, key: str, *, retries: int = 1
    ) -> web.StreamResponse:
        flight = self._zip_flights.get(key)
        if flight is not None:
            self._count("zip", "coalesced", job)
            self.metrics.coalesced.inc()
            total = max((c.config.timeouts.total for c in job.clients), default=600.0)
            tee, reader = await flight.follow(total)
            if tee is not None and reader is not None:
                job.served.upstream = tee.upstream
                return await self._send(http, job, tee, reader)
            if retries > 0:  # the leader failed: one of the followers leads the next try
                return await self._zip_miss(http, job, key, retries=retries - 1)
            return await self.zip_fetch(http, job, key, None)
        self._count("zip", "miss", job)
        flight = ZipFlight()
        self._zip_flights[key] = flight
        try:
            return await self.zip_fetch(http, job, key, flight)
        finally:
            if not flight.kept_open:  # else the keeper retires it once the zip is kept
                self._retire(key, flight)

    def _retire(self, key: str, flight: ZipFlight) -> None:
        if self._zip_flights.get(key) is flight:
            del self._zip_flights[key]
        flight.close()
        if self.bucket is not None:
            self.bucket.settle(key)  # the fleet's fetch lock goes (after any upload)

    async def zip_fetch(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight | None
    ) -> web.StreamResponse:
        if self.bucket is not None and flight is not None and job.admission.admitted:
            from_bucket = await self._from_bucket(http, job, key, flight)
            if from_bucket is not None:
                return from_bucket
        if job.verification is not None:
            return await self._zip_verified(http, job, key, flight, job.verification)
        if job.rollout is not None and self.comparer is not None:
            return await self.comparer.zip(http, job, key, flight, job.rollout)
        result = await self.walk_job(job, method="GET", stream=True)
        if isinstance(result, Failure):
            self.store_meta(job, key, result)  # negative answers are cached like any other
            return failure_response(result)
        tee = self._tee(job, result)
        if tee is None:
            result.close()
            job.served.status = 503
            return _busy(result.upstream)
        if flight is not None:
            flight.kept_open = True  # requests arriving while it is kept follow the tee
        self.tasks.spawn(self._fill_and_keep(job, key, result, tee, flight), name="zip-fill")
        return await self._publish_and_send(http, job, tee, flight)

    def _tee(self, job: Job, answer: UpstreamAnswer) -> Tee | None:
        """A tee for a streamed zip: spooled when there is room, else through memory at
        the client's pace, which only half of an upstream's connections may be used for
        (None when they all are)."""
        spool = self.spools.new(answer.content_length)
        direct = None
        if spool is None:
            direct = answer.upstream
            client = next((c for c in job.clients if c.name == direct), None)
            cap = max(1, (client.config.max_connections if client else 100) // 2)
            if self._direct.get(direct, 0) >= cap:
                return None
            self._direct[direct] = self._direct.get(direct, 0) + 1
        tee = Tee(
            spool,
            expected=answer.content_length,
            content_type=answer.content_type,
            upstream=answer.upstream,
        )
        tee.hold()  # the keeper's, released once the zip is kept or thrown away
        if direct is not None:
            tee.on_close = lambda: self._direct_done(direct)
        return tee

    def _direct_done(self, upstream: str) -> None:
        self._direct[upstream] = self._direct.get(upstream, 1) - 1

    async def _fill_and_keep(
        self, job: Job, key: str, answer: UpstreamAnswer, tee: Tee, flight: ZipFlight | None
    ) -> None:
        try:
            await tee.fill(answer, MAX_BYTES[Kind.ZIP], job.served.deadline)
            if tee.whole_on_disk:
                await self._keep_zip(job, key, tee)
        finally:
            tee.checked.set()
            if flight is not None:
                self._retire(key, flight)
            tee.unhold()

    async def _keep_zip(self, job: Job, key: str, tee: Tee, *, checked: bool = False) -> None:
        """Check a whole spooled zip by Go's rules and keep it (store, or memory when
        small); a zip that breaks them is counted and never kept."""
        req = job.request
        spool = tee.spool
        assert isinstance(req, ModuleRequest) and req.version is not None and spool is not None
        if not checked:
            spool.close(sync=False)
            tee.problem = await asyncio.to_thread(
                check_module_zip, spool.path, req.module, req.version
            )
            if tee.problem is None and self.inspect is not None:
                await self.inspect(req.module, req.version, spool.path)
            tee.checked.set()
            if tee.problem is not None:
                self.metrics.bad_zips.labels(tee.upstream, tee.problem.cause).inc()
                log.warning(
                    "upstream %s served a zip for %s@%s that breaks Go's rules (%s): not kept",
                    tee.upstream,
                    req.module,
                    req.version,
                    tee.problem.message,
                )
                return
        elif self.inspect is not None:
            await self.inspect(req.module, req.version, spool.path)
            tee.checked.set()  # proven by its checksum, and looked at
        answer = UpstreamAnswer(tee.upstream, 200, tee.content_type, tee.written, 0.0)
        if self.store is not None and keeps(self.metrics, job.admission, "disk"):
            art = await self.store.commit(
                spool,
                key,
                content_type=tee.content_type,
                upstream=tee.upstream,
                module=req.module,
                expected_size=tee.written,
                checked=True,
            )
            tee.kept = art is not None
            if tee.kept and self.rollouts is not None and self.rollouts.rolled_back(tee.upstream):
                self.store.forget(key)  # its rollback's drop may already have run
            elif art is not None and self.bucket is not None and (kept := self.store.get(key)):
                self.bucket.publish(key, art, kept[1])  # once per fleet, once complete
        elif self.memory is not None and tee.written <= SMALL_ZIP:
            body = await asyncio.to_thread(spool.path.read_bytes)
            if hashlib.sha256(body).hexdigest() == spool.digest:
                self.store_meta(job, key, _with_body(answer, body))

    async def _touch_bucket(self, key: str) -> None:
        """Record that the bucket's copy of `key` was used; Redis away costs only that."""
        assert self.bucket_access is not None
        try:
            await self.bucket_access.touch(key, self._clock())
        except Exception:
            self.metrics.redis_errors.labels("bucket_touch").inc()

    async def _from_bucket(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight
    ) -> web.StreamResponse | None:
        """A zip from the bucket tier: a redirect to a presigned URL, or its copy just
        backfilled into the store; None on a miss (then this replica fetches it)."""
        assert self.bucket is not None and self.store is not None
        found = await self.bucket.lookup(key, private=job.private, zip_request=True)
        if found is None:
            return None
        if self.bucket_access is not None:
            self.tasks.spawn(self._touch_bucket(key), name="bucket-touch")
        job.served.cache, job.served.upstream = "bucket", "cache"
        if isinstance(found, Redirect):
            job.served.status = 302
            headers = {"Location": found.url, UPSTREAM_HEADER: "cache", "Cache-Control": "no-store"}
            return web.Response(status=302, headers=headers)
        art, kept = found.artifact, self.store.get(key)
        ctype = art.content_type
        tee = Tee.of_file(kept[1], art.size, content_type=ctype, upstream="cache") if kept else None
        reader = tee.attach() if tee is not None else None
        if tee is None or reader is None:
            return None
        flight.publish(tee)  # local followers read the same file
        return await self._send(http, job, tee, reader, stored=art.stored)

    async def _publish_and_send(
        self, http: web.Request, job: Job, tee: Tee, flight: ZipFlight | None
    ) -> web.StreamResponse:
        """Hand `tee` to coalesced followers and stream it to this request's client."""
        reader = tee.attach()
        if flight is not None:
            flight.publish(tee)
        if reader is None:
            return text_response(502, f"upstream {tee.upstream}: the zip could not be read")
        return await self._send(http, job, tee, reader)

    async def _send(
        self,
        http: web.Request,
        job: Job,
        tee: Tee,
        reader: Reader,
        *,
        stored: float | None = None,
        path: Path | None = None,
    ) -> web.StreamResponse:
        """Stream a tee to the client (checked first when bad zips are refused, and by the
        request's policy gate when it has one; `path`: the tee's stored file)."""
        if self.cfg.bad_zips == "refuse" and not (tee.checked.is_set() and tee.problem is None):
            refused = await self._refused(tee)
            if refused is not None:
                tee.detach(reader)
                job.served.status = 502
                return refused
        gate: ZipGate | None = http.get(ZIP_GATE)
        if gate is not None:
            answer: web.Response | None = await gate(tee, path)
            if answer is not None:
                tee.detach(reader)
                return answer
        served = job.served
        headers = {UPSTREAM_HEADER: "cache" if stored is not None else tee.upstream}
        if stored is not None:
            headers["Age"] = str(max(0, int(self._clock() - stored)))
        if tee.content_type:
            headers["Content-Type"] = tee.content_type
        served.status = 200

        def sent(n: int) -> None:
            served.bytes += n

        resp = await send_tee(
            http,
            tee,
            reader,
            headers=headers,
            stall=self.stall,
            on_bytes=sent,
            on_stall=self.metrics.stalled_clients.inc,
        )
        if served.cache in (None, "miss") and tee.upstream_paced and tee.fill_seconds:
            served.transfer = (tee.written, tee.fill_seconds)
        if tee.error is not None and tee.cause != "cancelled":
            served.status = 502
            if served.cache in (None, "miss"):  # the leader: the upstream broke mid-body
                served.attempts.append(
                    Attempt(tee.upstream, Outcome.ERROR, 200, tee.error, tee.cause)
                )
        return resp

    async def _refused(self, tee: Tee) -> web.Response | None:
        """With `bad_zips: refuse`, the 502 for a zip that breaks Go's rules (or that
        could not be spooled to be checked), else None once it is checked."""
        if tee.spool is None:
            return text_response(
                503, f"cannot check the zip from {tee.upstream} before serving it: no spool room"
            )
        await tee.checked.wait()
        if tee.problem is not None:
            return text_response(
                502, f"upstream {tee.upstream}: bad module zip: {tee.problem.message}"
            )
        if tee.error is not None or not tee.whole_on_disk:
            return text_response(502, f"upstream {tee.upstream}: {tee.error or 'zip not whole'}")
        return None

    async def _zip_verified(
        self,
        http: web.Request,
        job: Job,
        key: str,
        flight: ZipFlight | None,
        verification: Verification,
    ) -> web.StreamResponse:
        """A zip checked against the checksum DB before its first byte is served: each
        upstream's answer is spooled and hashed; the first that matches is kept and sent."""
        verification.new_spool = self.spools.new
        verification.deadline = max((c.config.timeouts.total for c in job.clients), default=600.0)
        try:
            result = await self.walk_job(job, method="GET", stream=True)
        except ChecksumUnavailable as exc:
            job.served.status = 502
            return text_response(502, str(exc))
        if isinstance(result, Failure):
            self.store_meta(job, key, result)  # only a not-found is cached (briefly)
            return failure_response(result)
        spool = verification.spool
        assert spool is not None
        verification.spool = None
        return await self.serve_spool(job, key, result, spool, flight, http, proven=True)

    async def serve_spool(
        self,
        job: Job,
        key: str,
        answer: UpstreamAnswer,
        spool: Spool,
        flight: ZipFlight | None,
        http: web.Request,
        *,
        proven: bool = False,
    ) -> web.StreamResponse:
        """Serve a zip spooled whole (verified, or chosen by a comparison) and keep it. A
        zip proven by its checksum needs no check by Go's rules; any other is checked
        first, and one that breaks them is answered 502 and never kept."""
        tee = Tee.of_spool(spool, content_type=answer.content_type, upstream=answer.upstream)
        tee.hold()
        try:
            await self._keep_zip(job, key, tee, checked=proven)
            if tee.problem is not None:
                job.served.status = 502
                return text_response(
                    502, f"upstream {answer.upstream}: bad module zip: {tee.problem.message}"
                )
            job.served.upstream = job.served.upstream or answer.upstream
            return await self._publish_and_send(http, job, tee, flight)
        finally:
            tee.checked.set()
            tee.unhold()

    def new_spool(self, size: int | None) -> Spool | None:
        """A spool for a body of `size` bytes within the budget (None: no room)."""
        return self.spools.new(size)

    def drop_upstream(self, upstream: str) -> None:
        """Forget what a rolled-back mirror served: answers it gave to requests that were
        not compared may differ from the baseline's too."""
        dropped = self.memory.drop_upstream(upstream) if self.memory is not None else 0
        if self.store is not None:
            dropped += self.store.drop_upstream(upstream)
        log.warning("dropped %d cached answers served by %s", dropped, upstream)

    async def close(self) -> None:
        if self.bucket is not None:
            await self.bucket.close()
        await asyncio.to_thread(self.spools.close)


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


def _busy(upstream: str) -> web.Response:
    resp = text_response(
        503,
        f"upstream {upstream}: every connection it may use for downloads is held by slow "
        "clients and the spool is full; try again shortly",
    )
    resp.headers["Retry-After"] = "1"
    return resp


def _with_body(answer: UpstreamAnswer, body: bytes) -> UpstreamAnswer:
    return UpstreamAnswer(
        upstream=answer.upstream,
        status=200,
        content_type=answer.content_type,
        content_length=len(body),
        first_byte_seconds=answer.first_byte_seconds,
        body=body,
    )


def entry_response(entry: Entry, now: float) -> web.Response:
    """An answer from the memory cache."""
    headers = {UPSTREAM_HEADER: "cache", "Age": str(entry.age(now))}
    if entry.content_type:
        headers["Content-Type"] = entry.content_type
    return web.Response(status=entry.status, body=entry.body, headers=headers)
