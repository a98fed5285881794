"""Zips: coalesced fetches whose followers read the leader's bytes as they arrive,
checked before they are kept (and, with `bad_zips: refuse`, before they are served),
from the bucket tier, verified against the checksum DB, or compared for a rollout.

Every zip and every stored artifact goes to the client through `ZipPath.send`: the
refusal of a bad zip, the policy's zip gate, then `router.sending.send_tee`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from router.cache.disk import Spool
from router.cache.tier import Redirect
from router.checksums import ChecksumUnavailable, Verification
from router.core.fallback import Attempt, Failure, Outcome
from router.core.model import Cache
from router.core.protocol import MAX_BYTES, Kind
from router.observability import Metrics
from router.policygate import ZIP_GATE, ZipGate
from router.sending import send_tee
from router.serving.comparing import Comparer
from router.serving.flights import ZipFlight
from router.serving.job import Job
from router.serving.keeping import Keeper, Tiers, count
from router.serving.responses import UPSTREAM_HEADER, busy, failure_response, text_response
from router.spooling import Reader, Spools, Tee
from router.tasks import TaskGroup
from router.upstream import UpstreamAnswer

DEFAULT_TOTAL = 600.0  # seconds, when no upstream of the pool says otherwise


class ZipPath:
    """The zip half of the answer cache."""

    def __init__(
        self,
        tiers: Tiers,
        keeper: Keeper,
        spools: Spools,
        cfg: Cache,
        metrics: Metrics,
        tasks: TaskGroup,
        clock: Callable[[], float],
        stall: float,
        comparer: Comparer | None = None,
    ) -> None:
        self.tiers = tiers
        self.keeper = keeper
        self.spools = spools
        self.cfg = cfg
        self.metrics = metrics
        self.tasks = tasks
        self.clock = clock
        self.stall = stall
        self.comparer = comparer
        self._flights: dict[str, ZipFlight] = {}
        self._direct: dict[str, int] = {}  # upstream -> zips streamed at a client's pace

    async def miss(
        self, http: web.Request, job: Job, key: str, *, retries: int = 1
    ) -> web.StreamResponse:
        """A zip no local tier holds: follow the fetch in flight, or lead one."""
        flight = self._flights.get(key)
        if flight is not None:
            count(self.metrics, job, "coalesced")
            self.metrics.coalesced.inc()
            tee, reader = await flight.follow(_total(job))
            if tee is not None and reader is not None:
                job.served.follows(tee.upstream)
                return await self.send(http, job, tee, reader)
            if retries > 0:  # the leader failed: one of the followers leads the next try
                return await self.miss(http, job, key, retries=retries - 1)
            return await self.fetch(http, job, key, None)
        count(self.metrics, job, "miss")
        flight = ZipFlight()
        self._flights[key] = flight
        try:
            return await self.fetch(http, job, key, flight)
        finally:
            if not flight.kept_open:  # else the keeper retires it once the zip is kept
                self._retire(key, flight)

    def _retire(self, key: str, flight: ZipFlight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.close()
        if self.tiers.bucket is not None:
            self.tiers.bucket.settle(key)  # the fleet's fetch lock goes (after any upload)

    async def fetch(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight | None
    ) -> web.StreamResponse:
        """Lead the fetch of a zip: from the bucket, else verified, compared or as the pool
        walk gives it (streamed to the client while it is spooled)."""
        if self.tiers.bucket is not None and flight is not None and job.admission.admitted:
            from_bucket = await self._from_bucket(http, job, key, flight)
            if from_bucket is not None:
                return from_bucket
        if job.verification is not None:
            return await self._verified(http, job, key, flight, job.verification)
        if job.rollout is not None and self.comparer is not None:
            return await self._compared(http, job, key, flight)
        walked = await job.walk(method="GET", stream=True)
        job.served.took(walked)
        result = walked.result
        if isinstance(result, Failure):
            self.keeper.answer(job, key, result)  # negative answers are cached like any other
            return failure_response(result)
        tee = self._tee(job, result)
        if tee is None:
            result.close()
            job.served.answered(503)
            return busy(result.upstream)
        if flight is not None:
            flight.kept_open = True  # requests arriving while it is kept follow the tee
        deadline = job.served.deadline
        self.tasks.spawn(
            self._fill_and_keep(job, key, result, tee, flight, deadline), name="zip-fill"
        )
        return await self._publish_and_send(http, job, tee, flight)

    async def _compared(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight | None
    ) -> web.StreamResponse:
        assert self.comparer is not None and job.rollout is not None
        compared = await self.comparer.zip(job, job.rollout)
        job.served.took(compared.walked)
        if compared.rest is not None:
            return await self.fetch(http, compared.rest, key, flight)
        result = compared.walked.result
        if isinstance(result, Failure):
            self.keeper.answer(job, key, result)
            return failure_response(result)
        if compared.spool is None:
            return text_response(502, "no whole zip from the rollout's upstreams")
        return await self.serve_spool(job, key, result, compared.spool, flight, http)

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
        self,
        job: Job,
        key: str,
        answer: UpstreamAnswer,
        tee: Tee,
        flight: ZipFlight | None,
        deadline: float,
    ) -> None:
        try:
            await tee.fill(answer, MAX_BYTES[Kind.ZIP], deadline)
            if tee.whole_on_disk:
                await self.keeper.zip(job, key, tee)
        finally:
            tee.checked.set()
            if flight is not None:
                self._retire(key, flight)
            tee.unhold()

    async def _touch_bucket(self, key: str) -> None:
        """Record that the bucket's copy of `key` was used; Redis away costs only that."""
        assert self.tiers.bucket_access is not None
        try:
            await self.tiers.bucket_access.touch(key, self.clock())
        except Exception:
            self.metrics.redis_errors.labels("bucket_touch").inc()

    async def _from_bucket(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight
    ) -> web.StreamResponse | None:
        """A zip from the bucket tier: a redirect to a presigned URL, or its copy just
        backfilled into the store; None on a miss (then this replica fetches it)."""
        bucket, store = self.tiers.bucket, self.tiers.store
        assert bucket is not None and store is not None
        found = await bucket.lookup(key, private=job.private, zip_request=True)
        if found is None:
            return None
        if self.tiers.bucket_access is not None:
            self.tasks.spawn(self._touch_bucket(key), name="bucket-touch")
        job.served.from_cache("bucket")
        if isinstance(found, Redirect):
            job.served.answered(302)
            headers = {"Location": found.url, UPSTREAM_HEADER: "cache", "Cache-Control": "no-store"}
            return web.Response(status=302, headers=headers)
        art, kept = found.artifact, store.get(key)
        ctype = art.content_type
        tee = Tee.of_file(kept[1], art.size, content_type=ctype, upstream="cache") if kept else None
        reader = tee.attach() if tee is not None else None
        if tee is None or reader is None:
            return None
        flight.publish(tee)  # local followers read the same file
        return await self.send(http, job, tee, reader, stored=art.stored)

    async def _publish_and_send(
        self, http: web.Request, job: Job, tee: Tee, flight: ZipFlight | None
    ) -> web.StreamResponse:
        """Hand `tee` to coalesced followers and stream it to this request's client."""
        reader = tee.attach()
        if flight is not None:
            flight.publish(tee)
        if reader is None:
            return text_response(502, f"upstream {tee.upstream}: the zip could not be read")
        return await self.send(http, job, tee, reader)

    async def send(
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
        request's policy gate when it has one; `stored`: when a tier kept it; `path`: the
        tee's stored file)."""
        served = job.served
        if self.cfg.bad_zips == "refuse" and not (tee.checked.is_set() and tee.problem is None):
            refused = await self._refused(tee)
            if refused is not None:
                tee.detach(reader)
                served.answered(502)
                return refused
        gate: ZipGate | None = http.get(ZIP_GATE)
        if gate is not None:
            answer: web.Response | None = await gate(tee, path)
            if answer is not None:
                tee.detach(reader)
                return answer
        headers = {UPSTREAM_HEADER: "cache" if stored is not None else tee.upstream}
        if stored is not None:
            headers["Age"] = str(max(0, int(self.clock() - stored)))
        if tee.content_type:
            headers["Content-Type"] = tee.content_type
        served.answered(200)
        resp = await send_tee(
            http,
            tee,
            reader,
            headers=headers,
            stall=self.stall,
            on_bytes=served.sent,
            on_stall=self.metrics.stalled_clients.inc,
        )
        leader = served.cache in (None, "miss")
        if leader and tee.upstream_paced and tee.fill_seconds:
            served.paced(tee.written, tee.fill_seconds)
        if tee.error is not None and tee.cause != "cancelled":
            if leader:  # the upstream broke mid-body
                served.broke(Attempt(tee.upstream, Outcome.ERROR, 200, tee.error, tee.cause))
            else:
                served.answered(502)
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

    async def _verified(
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
        verification.deadline = _total(job)
        try:
            walked = await job.walk(method="GET", stream=True)
        except ChecksumUnavailable as exc:
            job.served.answered(502)
            return text_response(502, str(exc))
        job.served.took(walked)
        result = walked.result
        if isinstance(result, Failure):
            self.keeper.answer(job, key, result)  # only a not-found is cached (briefly)
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
            await self.keeper.zip(job, key, tee, checked=proven)
            if tee.problem is not None:
                job.served.answered(502)
                return text_response(
                    502, f"upstream {answer.upstream}: bad module zip: {tee.problem.message}"
                )
            job.served.follows(answer.upstream)
            return await self._publish_and_send(http, job, tee, flight)
        finally:
            tee.checked.set()
            tee.unhold()


def _total(job: Job) -> float:
    """The longest whole-transfer time any upstream of the job's pool allows."""
    return max((c.config.timeouts.total for c in job.clients), default=DEFAULT_TOTAL)
