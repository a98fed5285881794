"""Walking a pool: ask its upstreams in order with its fallback rule.

The fetch half of the request flow. It takes an already decided pool and
returns what happened (`Walked`: the answer or the failure, and every attempt); it
owns no policy beyond the pure fallback table in `router.core.fallback`, and writes
into no shared record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from router.core.fallback import (
    Attempt,
    Failure,
    Outcome,
    Step,
    classify_status,
    final_failure,
    next_step,
)
from router.core.model import Pool
from router.core.protocol import MAX_BYTES, Kind, ModuleRequest, SumdbRequest
from router.tracing import TraceContext, Tracer
from router.upstream import UpstreamAnswer, UpstreamClient, UpstreamError

PROPAGATE_ONLY = Tracer()

_CAUSE_OUTCOME = {
    "timeout": Outcome.TIMEOUT,
    "unreachable": Outcome.UNREACHABLE,
    "reset": Outcome.UNREACHABLE,
    "busy": Outcome.BUSY,
}


@dataclass(frozen=True, slots=True)
class Rejected:
    """An upstream's 200 that failed an acceptance check (checksum, tree head, body)."""

    reason: str
    cause: str  # metrics: checksum_mismatch, sumdb_inconsistent, truncated...
    fall_through: bool = True  # try the next upstream whatever the pool's fallback


Check = Callable[[UpstreamClient, UpstreamAnswer], Awaitable[Rejected | None]]
"""Accepts or rejects an upstream's 200 before anything of it reaches a client."""


@dataclass(frozen=True, slots=True)
class Walked:
    """What one walk did: the answer (or the failure to answer with) and every attempt."""

    result: UpstreamAnswer | Failure
    attempts: tuple[Attempt, ...]
    deadline: float | None = None  # the answering upstream's whole-transfer timeout

    @property
    def upstream(self) -> str | None:
        return self.result.upstream

    def failed(self) -> Failure | None:
        return self.result if isinstance(self.result, Failure) else None

    def after(self, earlier: Sequence[Attempt]) -> Walked:
        """This walk as the continuation of `earlier` attempts of the same request (which
        its record already holds): a failure is chosen over all of them."""
        if not isinstance(self.result, Failure):
            return self
        return Walked(final_failure([*earlier, *self.attempts]), self.attempts, self.deadline)


async def walk(
    request: ModuleRequest | SumdbRequest,
    pool: Pool,
    clients: Sequence[UpstreamClient],
    *,
    method: str,
    stream: bool,
    headers: Mapping[str, str],
    trace: TraceContext | None = None,
    tracer: Tracer = PROPAGATE_ONLY,
    check: Check | None = None,
) -> Walked:
    """Ask `clients` in order with the pool's fallback rule: the first 200 (body read
    whole, or left open when `stream`) that `check` accepts, else the go command's
    preferred failure. A rejected answer is discarded; the walk goes on to the next
    upstream whatever the fallback rule when the rejection says so (a checksum mismatch)."""
    limit = MAX_BYTES[request.kind]
    path = request.upstream_path()
    attempts: list[Attempt] = []
    for client in clients:
        began = time.monotonic()
        try:
            with tracer.attempt(trace, client.name) as trace_headers:
                answer = await client.fetch(
                    path,
                    method=method,
                    stream=stream,
                    limit=limit,
                    headers={**headers, **trace_headers},
                )
        except UpstreamError as exc:
            outcome = _CAUSE_OUTCOME.get(exc.cause, Outcome.ERROR)
            # a timeout still tells how slow the upstream was: it counts in the latency
            waited = time.monotonic() - began if exc.cause == "timeout" else None
            attempts.append(Attempt(client.name, outcome, None, exc.reason, exc.cause, waited))
        else:
            outcome = classify_status(answer.status)
            seconds = answer.first_byte_seconds
            rejected = None
            if outcome is Outcome.OK and check is not None:
                try:
                    rejected = await check(client, answer)
                except BaseException:
                    answer.close()
                    raise
            if rejected is not None:
                answer.close()
                reason, cause = rejected.reason, rejected.cause
                attempts.append(Attempt(client.name, Outcome.ERROR, 200, reason, cause, seconds))
                if rejected.fall_through:
                    continue
                outcome = Outcome.ERROR
            elif outcome is Outcome.OK:
                attempts.append(Attempt(client.name, outcome, 200, "", "", seconds))
                return Walked(answer, tuple(attempts), client.config.timeouts.total)
            else:
                cause = "not_found" if outcome is Outcome.NOT_FOUND else f"{answer.status // 100}xx"
                attempts.append(
                    Attempt(client.name, outcome, answer.status, _reason(answer), cause, seconds)
                )
                answer.close()
        fall = client.config.tier == "L3"
        if next_step(pool.fallback, outcome, always_fall_through=fall) is Step.STOP:
            break
    return Walked(final_failure(attempts), tuple(attempts))


def _reason(answer: UpstreamAnswer) -> str:
    """A one-line reason from an upstream's error answer (its text if it is plain text)."""
    text = ""
    ctype = (answer.content_type or "").lower()
    if answer.body and (not ctype or ctype.startswith("text/plain")):
        lines = answer.body.decode("utf-8", "replace").strip().splitlines()
        text = "".join(ch for ch in lines[0] if ch.isprintable())[:300] if lines else ""
    if answer.status in (404, 410):
        return text or "not found"
    return f"{answer.status} {text}".strip()


class Spooled(Protocol):
    """A file a body is copied into (`router.cache.disk.Spool`)."""

    failed: bool
    no_room: bool

    async def write(self, chunk: bytes) -> None: ...

    def close(self, *, sync: bool) -> None: ...

    def discard(self) -> None: ...


async def spool_body(answer: UpstreamAnswer, spool: Spooled, deadline: float) -> Rejected | None:
    """Copy a streamed 200 whole into `spool` and close it; on a broken, stalled or
    oversized body (or a failed write) the spool is discarded and the reason returned."""
    problem: Rejected | None = None
    try:
        async with asyncio.timeout(deadline):
            async for chunk in answer.iter_body(MAX_BYTES[Kind.ZIP]):
                await spool.write(chunk)
        answer.release()
    except TimeoutError:
        problem = Rejected(f"transfer exceeded {deadline:g}s", "timeout", False)
    except UpstreamError as exc:
        problem = Rejected(exc.reason, exc.cause, False)
    except BaseException:
        answer.close()
        spool.discard()
        raise
    if problem is None:
        await asyncio.to_thread(spool.close, sync=False)
        if spool.failed:
            why = "no room in cache.spool" if spool.no_room else "the disk write failed"
            problem = Rejected(f"cannot spool the body: {why}", "spool", False)
    if problem is not None:
        answer.close()
        spool.discard()
    return problem
