"""Rollout comparisons (mirror A/B) as a wrapper around the pool walk: one sampled
request asked of a candidate and its baseline at once, the answers compared, the
baseline's chosen when they differ.

The decisions (what differs, when to roll back) are `router.core.rollout`; the rollout
states are `router.rollouts`. The comparer fetches and judges; what it chooses is
served, kept and coalesced by the answer cache like any other answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from router.cache.disk import Spool
from router.core.fallback import Failure
from router.core.protocol import Kind
from router.core.rollout import RETRY_DELAYS, Fingerprint, info_fields
from router.rollouts import RolloutPick, Rollouts
from router.serving.job import Job
from router.serving.walk import Walked, spool_body
from router.upstream import UpstreamAnswer, UpstreamClient

INLINE_RETRIES = RETRY_DELAYS[:2]  # a baseline that failed is asked again this soon
DEFAULT_DEADLINE = 600.0


@dataclass(slots=True)
class _Fetched:
    """One compared upstream's walk (a zip: spooled whole) and what is compared of it."""

    walked: Walked
    spool: Spool | None
    print: Fingerprint | None

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None


@dataclass(slots=True)
class ComparedZip:
    """A compared zip: the walk to account for and, when it answered, the whole zip;
    or, when nothing compared may be served, the job over the pool's other upstreams."""

    walked: Walked
    spool: Spool | None = None
    rest: Job | None = None


class Comparer:
    """Compares a rollout candidate's answers with its baseline's.

    A compared request is answered only with what the baseline vouched for: the
    candidate's answer when the two agree, the baseline's when they differ. When the
    baseline cannot answer (asked again twice, 0.2 and 0.4 s later), the candidate's
    answer is never served unproven: the request goes on to the pool's other upstreams,
    or fails with the baseline's error."""

    def __init__(self, rollouts: Rollouts, new_spool: Callable[[int | None], Spool | None]):
        self.rollouts = rollouts
        self._new_spool = new_spool

    async def meta(self, job: Job, pick: RolloutPick) -> Walked:
        """A compared .info or .mod, read whole."""
        chosen, unvouched = await self._compare(job, pick, self._meta)
        rest = _go_on(job, pick, chosen.walked, unvouched)
        if rest is None:
            return chosen.walked
        more = await rest.walk(method="GET", stream=False)
        return Walked(more.result, (*chosen.walked.attempts, *more.attempts), more.deadline)

    async def zip(self, job: Job, pick: RolloutPick) -> ComparedZip:
        """A compared .zip: both spooled whole, compared by length and digest."""
        chosen, unvouched = await self._compare(job, pick, self._spooled)
        rest = _go_on(job, pick, chosen.walked, unvouched)
        if rest is not None:
            chosen.discard()
        spool, chosen.spool = chosen.spool, None
        return ComparedZip(chosen.walked, spool, rest)

    async def _compare(
        self, job: Job, pick: RolloutPick, fetch: Callable[[Job], Awaitable[_Fetched]]
    ) -> tuple[_Fetched, bool]:
        """Both answers fetched at once and judged: (the one to serve, with the attempts
        to account for; whether the baseline could not vouch for anything)."""
        cand, base = await asyncio.gather(
            fetch(_one(job, pick.candidate)), fetch(_one(job, pick.baseline))
        )
        for delay in INLINE_RETRIES:
            if base.print is not None or cand.print is None:
                break
            await asyncio.sleep(delay)
            base.discard()
            base = await fetch(_one(job, pick.baseline))
        if cand.print is None:  # the candidate failed: selection's business, not a comparison
            chosen = _adopt(cand, base) if base.print is not None else cand
            unvouched = False
        elif base.print is None:
            self.rollouts.unresolved(pick.tracker)
            chosen, unvouched = _adopt(cand, base), True
        else:
            differs = cand.print.differs(base.print)
            self.rollouts.record(pick.tracker, differs, _what(job))
            chosen, unvouched = (_adopt(cand, base) if differs else cand), False
        for fetched in (cand, base):
            if fetched.spool is not None and fetched.spool is not chosen.spool:
                fetched.discard()
        return chosen, unvouched

    async def _meta(self, job: Job) -> _Fetched:
        walked = await job.walk(method="GET", stream=False)
        return _Fetched(walked, None, _meta_fingerprint(job.request.kind, walked.result))

    async def _spooled(self, job: Job) -> _Fetched:
        """A zip fetched whole into a spool (digest and size known), or the failure."""
        walked = await job.walk(method="GET", stream=True)
        result = walked.result
        if isinstance(result, Failure):
            return _Fetched(walked, None, _found_or_not(result))
        spool = self._new_spool(result.content_length)
        if spool is None:
            result.close()
            failure = Failure(503, "no room to spool the zip to compare it (cache.spool)", None)
            return _Fetched(dataclasses.replace(walked, result=failure), None, None)
        problem = await spool_body(result, spool, walked.deadline or DEFAULT_DEADLINE)
        if problem is not None:
            status = 503 if problem.cause == "spool" else 502
            failure = Failure(status, f"upstream {result.upstream}: {problem.reason}", None)
            return _Fetched(dataclasses.replace(walked, result=failure), None, None)
        return _Fetched(walked, spool, Fingerprint(True, spool.size, spool.digest))


def _one(job: Job, client: UpstreamClient) -> Job:
    """`job` asked of `client` alone."""
    return dataclasses.replace(job, clients=[client])


def _adopt(cand: _Fetched, base: _Fetched) -> _Fetched:
    """Serve the baseline's answer: the request accounts for both walks."""
    attempts = (*cand.walked.attempts, *base.walked.attempts)
    walked = Walked(base.walked.result, attempts, base.walked.deadline)
    return _Fetched(walked, base.spool, base.print)


def _go_on(job: Job, pick: RolloutPick, walked: Walked, unvouched: bool) -> Job | None:
    """`job` over the pool's other upstreams when no compared answer may be served: neither
    compared one served and the pool's fallback rule moves on after such a failure, or the
    baseline could not vouch for the candidate (None otherwise)."""
    result = walked.result
    if not isinstance(result, Failure):
        return None
    if not unvouched and result.status not in (404, 410) and job.pool.fallback != "any-error":
        return None
    names = (pick.candidate.name, pick.baseline.name)
    rest = [c for c in job.clients if c.name not in names]
    if not rest:
        return None
    return dataclasses.replace(job, clients=rest, rollout=None, earlier=walked.attempts)


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
