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


class Comparer:
    """Compares a rollout candidate's answers with its baseline's for one answer cache."""

    def __init__(self, cache: AnswerCache, rollouts: Rollouts) -> None:
        self.cache = cache
        self.rollouts = rollouts

    async def meta(self, job: Job, pick: RolloutPick) -> UpstreamAnswer | Failure:
        """A compared .info or .mod: the candidate's answer, or the baseline's when the
        two differ (or the candidate failed)."""
        cache = self.cache
        base_served = Served()
        cand, base = await asyncio.gather(
            cache.walk_job(_one(job, pick.candidate), method="GET", stream=False),
            cache.walk_job(_one(job, pick.baseline, base_served), method="GET", stream=False),
        )
        kind = job.request.kind
        cand_fp, base_fp = _meta_fingerprint(kind, cand), _meta_fingerprint(kind, base)
        if cand_fp is None:  # the candidate failed: selection's business, not a comparison
            result = _adopt(job, base_served, base) if base_fp is not None else cand
        elif base_fp is None:
            self._retry(job, pick, cand_fp)
            result = cand
        else:
            result = self._judge(job, pick, cand_fp, base_fp, cand, base, base_served)
        rest = _go_on(job, pick, result)
        if rest is not None:
            return await cache.walk_job(rest, method="GET", stream=False)  # a third may have it
        return result

    async def zip(
        self, http: web.Request, job: Job, key: str, flight: ZipFlight | None, pick: RolloutPick
    ) -> web.StreamResponse:
        """A compared .zip: both spooled whole, compared by length and digest, one kept."""
        cache = self.cache
        base_served = Served()
        (cand, cand_spool), (base, base_spool) = await asyncio.gather(
            self._spooled(_one(job, pick.candidate)),
            self._spooled(_one(job, pick.baseline, base_served)),
        )
        cand_fp, base_fp = _zip_fingerprint(cand, cand_spool), _zip_fingerprint(base, base_spool)
        chosen: UpstreamAnswer | Failure
        if cand_fp is not None and base_fp is not None:
            chosen = self._judge(job, pick, cand_fp, base_fp, cand, base, base_served)
        elif cand_fp is not None:
            self._retry(job, pick, cand_fp)
            chosen = cand
        else:
            chosen = _adopt(job, base_served, base) if base_fp is not None else cand
        chosen_spool = base_spool if chosen is base else cand_spool
        for spool in (cand_spool, base_spool):
            if spool is not None and spool is not chosen_spool:
                spool.discard()
        rest = _go_on(job, pick, chosen)
        if rest is not None:
            return await cache.zip_fetch(http, rest, key, flight)  # a third may have it
        if isinstance(chosen, Failure):
            cache.store_meta(job, key, chosen)
            return failure_response(chosen)
        if chosen_spool is None:
            return text_response(502, "no whole zip from the rollout's upstreams")
        return await cache.serve_spool(job, key, chosen, chosen_spool, flight, shape_check=True)

    async def _spooled(self, job: Job) -> tuple[UpstreamAnswer | Failure, Spool | None]:
        """A zip fetched whole into a spool (digest and size known), or the failure."""
        result = await self.cache.walk_job(job, method="GET", stream=True)
        if isinstance(result, Failure):
            return result, None
        spool = self.cache.new_spool()
        problem = await spool_body(result, spool, job.served.deadline)
        if problem is not None:
            status = 503 if problem.cause == "spool" else 502
            return Failure(status, f"upstream {result.upstream}: {problem.reason}", None), None
        return result, spool

    def _judge(
        self,
        job: Job,
        pick: RolloutPick,
        cand_fp: Fingerprint,
        base_fp: Fingerprint,
        cand: UpstreamAnswer | Failure,
        base: UpstreamAnswer | Failure,
        base_served: Served,
    ) -> UpstreamAnswer | Failure:
        differs = cand_fp.differs(base_fp)
        self.rollouts.record(pick.tracker, differs, _what(job))
        return _adopt(job, base_served, base) if differs else cand

    def _retry(self, job: Job, pick: RolloutPick, want: Fingerprint) -> None:
        """The baseline did not answer: compare again later, backing off from 200 ms."""
        what = _what(job)

        async def again() -> None:
            for delay in RETRY_DELAYS:
                await asyncio.sleep(delay)
                got = await self._baseline_fingerprint(job, pick)
                if got is not None:
                    self.rollouts.record(pick.tracker, want.differs(got), what)
                    return
            self.rollouts.unresolved(pick.tracker)

        self.cache.tasks.spawn(again(), name="rollout-retry")

    async def _baseline_fingerprint(self, job: Job, pick: RolloutPick) -> Fingerprint | None:
        base_job = _one(job, pick.baseline, Served())
        if job.request.kind is Kind.ZIP:
            result, spool = await self._spooled(base_job)
            found = _zip_fingerprint(result, spool)
            if spool is not None:
                spool.discard()
            return found
        answer = await self.cache.walk_job(base_job, method="GET", stream=False)
        return _meta_fingerprint(job.request.kind, answer)


def _one(job: Job, client: UpstreamClient, served: Served | None = None) -> Job:
    """`job` asked of `client` alone."""
    return dataclasses.replace(job, clients=[client], served=served or job.served)


def _adopt(
    job: Job, base_served: Served, base: UpstreamAnswer | Failure
) -> UpstreamAnswer | Failure:
    """Serve the baseline's answer: account for it as this request's."""
    job.served.attempts.extend(base_served.attempts)
    job.served.upstream = base_served.upstream
    job.served.deadline = base_served.deadline
    return base


def _go_on(job: Job, pick: RolloutPick, result: UpstreamAnswer | Failure) -> Job | None:
    """`job` over the pool's other upstreams when neither compared one served and the
    pool's fallback rule moves on after such a failure (None otherwise)."""
    if not isinstance(result, Failure):
        return None
    if result.status not in (404, 410) and job.pool.fallback != "any-error":
        return None
    names = (pick.candidate.name, pick.baseline.name)
    rest = [c for c in job.clients if c.name not in names]
    return dataclasses.replace(job, clients=rest, rollout=None) if rest else None


def _what(job: Job) -> str:
    req = job.request
    return f"{req.module}@{req.version} {req.kind.value}"


def _meta_fingerprint(kind: Kind, result: UpstreamAnswer | Failure) -> Fingerprint | None:
    """What is compared of a small answer; None when there was no answer to compare."""
    if isinstance(result, Failure):
        return Fingerprint(False, 0, "") if result.status in (404, 410) else None
    body = result.body or b""
    info = info_fields(body) if kind is Kind.INFO else None
    return Fingerprint(True, len(body), hashlib.sha256(body).hexdigest(), info)


def _zip_fingerprint(result: UpstreamAnswer | Failure, spool: Spool | None) -> Fingerprint | None:
    if isinstance(result, Failure):
        return Fingerprint(False, 0, "") if result.status in (404, 410) else None
    if spool is None:
        return None
    return Fingerprint(True, spool.size, spool.digest)
