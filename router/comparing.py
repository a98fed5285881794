"""Rollout comparisons (mirror A/B): one sampled request asked of a candidate and its
baseline at once, the answers compared, the baseline's served when they differ.

The decisions (what differs, when to roll back) are `router.core.rollout`; the rollout
states are `router.rollouts`. This module does the fetching, on behalf of the answer
cache, so what is served is kept and coalesced like any other answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from router.cache.disk import Spool
from router.core.fallback import Failure
from router.core.protocol import Kind
from router.core.rollout import RETRY_DELAYS, Fingerprint, info_fields
from router.gateway import Served, failure_response, spool_body, text_response
from router.rollouts import RolloutPick, Rollouts
from router.upstream import UpstreamAnswer, UpstreamClient

if TYPE_CHECKING:
    from router.caching import AnswerCache, Job, ZipFlight


INLINE_RETRIES = RETRY_DELAYS[:2]  # a baseline that failed is asked again this soon


@dataclass(slots=True)
class _Fetched:
    """One compared upstream's answer (a zip: spooled whole) and what is compared of it."""

    result: UpstreamAnswer | Failure
    spool: Spool | None
    print: Fingerprint | None
    served: Served

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None


class Comparer:
    """Compares a rollout candidate's answers with its baseline's for one answer cache.

    A compared request is answered only with what the baseline vouched for: the
    candidate's answer when the two agree, the baseline's when they differ. When the
    baseline cannot answer (asked again twice, 0.2 and 0.4 s later), the candidate's
    answer is never served unproven: the request goes on to the pool's other upstreams,
    or fails with the baseline's error."""

    def __init__(self, cache: AnswerCache, rollouts: Rollouts) -> None:
        self.cache = cache
        self.rollouts = rollouts

    async def meta(self, job: Job, pick: RolloutPick) -> UpstreamAnswer | Failure:
        """A compared .info or .mod."""
        chosen, unvouched = await self._compare(job, pick, self._meta)
        rest = _go_on(job, pick, chosen.result, unvouched)
        if rest is not None:
            return await self.cache.walk_job(rest, method="GET", stream=False)
        return chosen.result

    async def zip(
        self,
        http: web.Request,
        job: Job,
        key: str,
        flight: ZipFlight | None,
        pick: RolloutPick,
    ) -> web.StreamResponse:
        """A compared .zip: both spooled whole, compared by length and digest."""
        chosen, unvouched = await self._compare(job, pick, self._spooled)
        result = chosen.result
        rest = _go_on(job, pick, result, unvouched)
        if rest is not None:
            chosen.discard()
            return await self.cache.zip_fetch(http, rest, key, flight)
        if isinstance(result, Failure):
            self.cache.store_meta(job, key, result)
            return failure_response(result)
        if chosen.spool is None:
            return text_response(502, "no whole zip from the rollout's upstreams")
        spool, chosen.spool = chosen.spool, None
        return await self.cache.serve_spool(job, key, result, spool, flight, http)

    async def _compare(
        self, job: Job, pick: RolloutPick, fetch: Callable[[Job, Served], Awaitable[_Fetched]]
    ) -> tuple[_Fetched, bool]:
        """Both answers fetched at once and judged: (the one to serve, whether the baseline
        could not vouch for anything)."""
        cand, base = await asyncio.gather(
            fetch(_one(job, pick.candidate, job.served), job.served),
            fetch(_one(job, pick.baseline, Served()), Served()),
        )
        for delay in INLINE_RETRIES:
            if base.print is not None or cand.print is None:
                break
            await asyncio.sleep(delay)
            base.discard()
            served = Served()
            base = await fetch(_one(job, pick.baseline, served), served)
        if cand.print is None:  # the candidate failed: selection's business, not a comparison
            chosen = _adopt(job, base) if base.print is not None else cand
            unvouched = False
        elif base.print is None:
            self.rollouts.unresolved(pick.tracker)
            chosen, unvouched = _adopt(job, base), True
        else:
            differs = cand.print.differs(base.print)
            self.rollouts.record(pick.tracker, differs, _what(job))
            chosen, unvouched = (_adopt(job, base) if differs else cand), False
        for fetched in (cand, base):
            if fetched is not chosen:
                fetched.discard()
        return chosen, unvouched

    async def _meta(self, job: Job, served: Served) -> _Fetched:
        result = await self.cache.walk_job(job, method="GET", stream=False)
        return _Fetched(result, None, _meta_fingerprint(job.request.kind, result), served)

    async def _spooled(self, job: Job, served: Served) -> _Fetched:
        """A zip fetched whole into a spool (digest and size known), or the failure."""
        result = await self.cache.walk_job(job, method="GET", stream=True)
        if isinstance(result, Failure):
            return _Fetched(result, None, _found_or_not(result), served)
        spool = self.cache.new_spool(result.content_length)
        if spool is None:
            result.close()
            failure = Failure(503, "no room to spool the zip to compare it (cache.spool)", None)
            return _Fetched(failure, None, None, served)
        problem = await spool_body(result, spool, job.served.deadline)
        if problem is not None:
            status = 503 if problem.cause == "spool" else 502
            failure = Failure(status, f"upstream {result.upstream}: {problem.reason}", None)
            return _Fetched(failure, None, None, served)
        return _Fetched(result, spool, Fingerprint(True, spool.size, spool.digest), served)


def _one(job: Job, client: UpstreamClient, served: Served) -> Job:
    """`job` asked of `client` alone."""
    return dataclasses.replace(job, clients=[client], served=served)


def _adopt(job: Job, base: _Fetched) -> _Fetched:
    """Serve the baseline's answer: account for it as this request's."""
    job.served.attempts.extend(base.served.attempts)
    job.served.upstream = base.served.upstream
    job.served.deadline = base.served.deadline
    return base


def _go_on(
    job: Job, pick: RolloutPick, result: UpstreamAnswer | Failure, unvouched: bool
) -> Job | None:
    """`job` over the pool's other upstreams when no compared answer may be served: neither
    compared one served and the pool's fallback rule moves on after such a failure, or the
    baseline could not vouch for the candidate (None otherwise)."""
    if not isinstance(result, Failure):
        return None
    if not unvouched and result.status not in (404, 410) and job.pool.fallback != "any-error":
        return None
    names = (pick.candidate.name, pick.baseline.name)
    rest = [c for c in job.clients if c.name not in names]
    return dataclasses.replace(job, clients=rest, rollout=None) if rest else None


def _what(job: Job) -> str:
    req = job.request
    return f"{req.module}@{req.version} {req.kind.value}"


def _found_or_not(failure: Failure) -> Fingerprint | None:
    """A not-found compares (as "not there"); any other failure is no answer at all."""
    return Fingerprint(False, 0, "") if failure.status in (404, 410) else None


def _meta_fingerprint(kind: Kind, result: UpstreamAnswer | Failure) -> Fingerprint | None:
    """What is compared of a small answer; None when there was no answer to compare."""
    if isinstance(result, Failure):
        return _found_or_not(result)
    body = result.body or b""
    info = info_fields(body) if kind is Kind.INFO else None
    return Fingerprint(True, len(body), hashlib.sha256(body).hexdigest(), info)
