"""Serving from cache: memory, the artifact store and the shared Redis tier, with
coalesced misses, stale-while-revalidate and stale-if-error.

Sits between the decision (pool, ordered upstreams; the access check has
already run) and the pool walk. Every answer served without an upstream call
carries `Age` and `X-Router-Upstream: cache`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from router.cache.disk import ArtifactStore, Spool, check_module_zip
from router.cache.memory import Entry, MemoryCache
from router.cache.shared import SharedTier
from router.cache.ttl import cache_key, lifetime
from router.checksums import ChecksumUnavailable, Verification
from router.comparing import Comparer
from router.config.model import Cache, Pool
from router.core.fallback import Failure
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
from router.rollouts import RolloutPick, Rollouts
from router.tasks import TaskGroup
from router.tracing import Tracer
from router.upstream import UpstreamAnswer, UpstreamClient

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

    @property
    def key(self) -> str:
        verified = self.verification is not None
        return cache_key(self.request, self.pool.name, private=self.private, verified=verified)


@dataclass(slots=True)
class ZipFlight:
    """A zip being fetched by one request while others wait for its bytes."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    path: Path | None = None
    content_type: str | None = None
    upstream: str | None = None


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
        self._owner = uuid.uuid4().hex[:12]
        self._spool_dir: Path | None = None
        self.tracer: Tracer = Tracer()
        self.rollouts: Rollouts | None = None
        self.comparer: Comparer | None = None

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
        self,
        request: ModuleRequest | SumdbRequest,
        pool: str,
        private: bool,
        served: Served,
        verified: bool = False,
    ) -> web.Response | None:
        """A fresh memory hit, answered before any upstream ranking (None otherwise)."""
        if self.memory is None:
            return None
        key = cache_key(request, pool, private=private, verified=verified)
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
                self._count(kind, "hit", job)
                art, path = found
                return _file_response(path, art.content_type, art.stored, now)
        if http.method == "HEAD":
            return await self._passthrough(http, job)
        if request.kind is Kind.ZIP:
            return await self._zip_miss(http, job, key)
        return await self._meta_miss(http, job, key)

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
        return await respond(http, result, MAX_BYTES[job.request.kind], job.served)

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
        if self.shared is None:
            return None
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
        if self.shared is not None and job.request.kind is not Kind.ZIP:
            ttl = entry.stale_until - now if entry.stale_until != float("inf") else 30 * 86400
            self.tasks.spawn(self.shared.put(key, entry, ttl), name="cache-share")
        if self.store is not None and job.request.immutable and status == 200:
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
            served = await self._follow(flight, job)
            if served is not None:
                return served
            if retries > 0:  # the leader failed: one of the followers leads the next try
                return await self._zip_miss(http, job, key, retries=retries - 1)
            return await self.zip_fetch(http, job, key, spool=None)
        self._count("zip", "miss", job)
        flight = ZipFlight()
        self._zip_flights[key] = flight
        try:
            return await self.zip_fetch(http, job, key, spool=flight)
        finally:
            self._zip_flights.pop(key, None)
            flight.done.set()

    async def _follow(self, flight: ZipFlight, job: Job) -> web.StreamResponse | None:
        total = max((c.config.timeouts.total for c in job.clients), default=600.0)
        try:
            async with asyncio.timeout(total):
                await flight.done.wait()
        except TimeoutError:
            return None
        if flight.path is None or not flight.path.exists():
            return None
        job.served.upstream = flight.upstream
        return _file_response(
            flight.path, flight.content_type, None, self._clock(), flight.upstream
        )

    async def zip_fetch(
        self, http: web.Request, job: Job, key: str, spool: ZipFlight | None
    ) -> web.StreamResponse:
        if job.verification is not None:
            return await self._zip_verified(http, job, key, spool, job.verification)
        if job.rollout is not None and self.comparer is not None:
            return await self.comparer.zip(http, job, key, spool, job.rollout)
        result = await self.walk_job(job, method="GET", stream=True)
        if isinstance(result, Failure):
            self.store_meta(job, key, result)  # negative answers are cached like any other
            return failure_response(result)
        sink = self._zip_sink(job, key, result, spool)
        return await respond(http, result, MAX_BYTES[Kind.ZIP], job.served, sink)

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
        verification.new_spool = self.new_spool
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
        return await self.serve_spool(job, key, result, spool, flight)

    async def serve_spool(
        self,
        job: Job,
        key: str,
        answer: UpstreamAnswer,
        spool: Spool,
        flight: ZipFlight | None,
        *,
        shape_check: bool = False,
    ) -> web.StreamResponse:
        """Keep a whole zip spooled to disk (store, or memory when small) and answer from
        the file; coalesced followers get the same file. A zip already proven by its
        checksum needs no `shape_check`; any other is first checked like the store does."""
        req = job.request
        if shape_check:
            assert isinstance(req, ModuleRequest) and req.version is not None
            problem = await asyncio.to_thread(check_module_zip, spool.path, req.module, req.version)
            if problem is not None:
                spool.discard()
                job.served.status = 502
                return text_response(502, f"upstream {answer.upstream}: bad module zip: {problem}")
        path: Path | None = None
        if self.store is not None and spool.size <= self.store.budget:
            art = await self.store.commit(
                spool,
                key,
                content_type=answer.content_type,
                upstream=answer.upstream,
                module=req.module,
                expected_size=spool.size,
            )
            found = self.store.get(key) if art is not None else None
            path = found[1] if found is not None else None
        if path is None:
            if not spool.path.exists():
                return text_response(503, "cannot keep the zip: disk write failed")
            path = await self._keep_spool(job, key, answer, spool)
        if flight is not None:
            flight.path, flight.content_type = path, answer.content_type
            flight.upstream = answer.upstream
        job.served.status, job.served.bytes = 200, spool.size
        return _file_response(path, answer.content_type, None, self._clock(), answer.upstream)

    async def _keep_spool(self, job: Job, key: str, answer: UpstreamAnswer, spool: Spool) -> Path:
        """A whole zip that stays in its spool (no store for it): in memory too when it is
        small; the file itself is removed once coalesced followers had time to open it."""
        if self.memory is not None and spool.size <= SMALL_ZIP:
            body = await asyncio.to_thread(spool.path.read_bytes)
            self.store_meta(job, key, _with_body(answer, body))
        self.tasks.spawn(_unlink_later(spool), name="spool-cleanup")
        return spool.path

    def _zip_sink(
        self, job: Job, key: str, answer: UpstreamAnswer, flight: ZipFlight | None
    ) -> ZipSink | None:
        if self.store is None and self.memory is None:
            return None  # pure pass-through: nothing is kept
        return ZipSink(self, job, key, answer, self.new_spool(), flight)

    def new_spool(self) -> Spool:
        """A file to copy a body into: in the store's tmp folder, else a private one."""
        return self.store.spool() if self.store is not None else self._temp_spool()

    def _temp_spool(self) -> Spool:
        if self._spool_dir is None:
            self._spool_dir = Path(tempfile.mkdtemp(prefix="goproxy-router-spool-"))
        return Spool(self._spool_dir / uuid.uuid4().hex)

    def drop_upstream(self, upstream: str) -> None:
        """Forget what a rolled-back mirror served: answers it gave to requests that were
        not compared may differ from the baseline's too."""
        dropped = self.memory.drop_upstream(upstream) if self.memory is not None else 0
        if self.store is not None:
            dropped += self.store.drop_upstream(upstream)
        log.warning("dropped %d cached answers served by %s", dropped, upstream)

    async def close(self) -> None:
        if self._spool_dir is not None:
            await asyncio.to_thread(_rmtree, self._spool_dir)


class ZipSink:
    """Copies a streamed zip to a spool; at the end keeps it (store, memory) and hands
    it to coalesced followers, or throws it away if the body was not whole."""

    def __init__(
        self,
        owner: AnswerCache,
        job: Job,
        key: str,
        answer: UpstreamAnswer,
        spool: Spool,
        flight: ZipFlight | None,
    ) -> None:
        self.owner, self.job, self.key, self.answer = owner, job, key, answer
        self.spool, self.flight = spool, flight

    async def write(self, chunk: bytes) -> None:
        await self.spool.write(chunk)

    async def finish(self, ok: bool) -> None:
        owner, req = self.owner, self.job.request
        if not ok or self.spool.failed:
            self.spool.discard()
            return
        assert isinstance(req, ModuleRequest) and req.version is not None
        module, version = req.module, req.version

        def check(path: Path) -> str | None:
            return check_module_zip(path, module, version)

        if owner.store is not None:
            art = await owner.store.commit(
                self.spool,
                self.key,
                content_type=self.answer.content_type,
                upstream=self.answer.upstream,
                module=module,
                expected_size=self.answer.content_length,
                check=check,
            )
            if art is not None and self.flight is not None:
                found = owner.store.get(self.key)
                self.flight.path = found[1] if found else None
        else:
            await asyncio.to_thread(self.spool.close, sync=False)
            problem = None
            if self.answer.content_length not in (None, self.spool.size):
                problem = "length differs from the announced one"
            problem = problem or await asyncio.to_thread(check, self.spool.path)
            if problem is not None:
                log.warning("not keeping %s: %s", self.key, problem)
                self.spool.discard()
                return
            path = await owner._keep_spool(self.job, self.key, self.answer, self.spool)
            if self.flight is not None:
                self.flight.path = path
        if self.flight is not None:
            self.flight.content_type = self.answer.content_type
            self.flight.upstream = self.answer.upstream


def _with_body(answer: UpstreamAnswer, body: bytes) -> UpstreamAnswer:
    return UpstreamAnswer(
        upstream=answer.upstream,
        status=200,
        content_type=answer.content_type,
        content_length=len(body),
        first_byte_seconds=answer.first_byte_seconds,
        body=body,
    )


async def _unlink_later(spool: Spool, delay: float = 120.0) -> None:
    """Followers open the spool within moments; remove it once they surely have."""
    await asyncio.sleep(delay)
    spool.discard()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def entry_response(entry: Entry, now: float) -> web.Response:
    """An answer from the memory cache."""
    headers = {UPSTREAM_HEADER: "cache", "Age": str(entry.age(now))}
    if entry.content_type:
        headers["Content-Type"] = entry.content_type
    return web.Response(status=entry.status, body=entry.body, headers=headers)


def _file_response(
    path: Path,
    content_type: str | None,
    stored: float | None,
    now: float,
    upstream: str | None = None,
) -> web.FileResponse:
    """An answer from a file (sendfile), from the store or a coalesced fetch's spool."""
    resp = web.FileResponse(path, chunk_size=1 << 20)
    resp.headers[UPSTREAM_HEADER] = upstream if stored is None and upstream else "cache"
    if stored is not None:
        resp.headers["Age"] = str(max(0, int(now - stored)))
    if content_type:
        resp.headers["Content-Type"] = content_type
    return resp
