"""One decided request, as the serving path carries it, and its fetch: the pool walk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.checksums import Verification
from router.core.admission import NOT_A_VERSION, Admission
from router.core.fallback import Attempt
from router.core.lifetimes import cache_key
from router.core.model import Pool
from router.core.protocol import ModuleRequest, SumdbRequest
from router.rollouts import RolloutPick
from router.serving.record import Served
from router.serving.walk import PROPAGATE_ONLY, Check, Walked, walk
from router.tracing import Tracer
from router.upstream import UpstreamClient


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
    earlier: tuple[Attempt, ...] = ()  # attempts made before this walk (a comparison's)
    tracer: Tracer = PROPAGATE_ONLY

    @property
    def key(self) -> str:
        verified = self.verification is not None
        return cache_key(self.request, self.pool.name, private=self.private, verified=verified)

    async def walk(self, *, method: str, stream: bool) -> Walked:
        """The pool walk for this job (`router.serving.walk.walk`), with its acceptance
        test; a failure is chosen over the `earlier` attempts too."""
        check = self.check if method == "GET" else None  # a HEAD has no body to check
        if self.verification is not None and method == "GET":
            self.verification.start()  # the checksum lookup runs while the artifact comes
            check = self.verification.check
        walked = await walk(
            self.request,
            self.pool,
            self.clients,
            method=method,
            stream=stream,
            headers=self.headers,
            trace=self.served.trace,
            tracer=self.tracer,
            check=check,
        )
        return walked.after(self.earlier) if self.earlier else walked
