"""Rules that change live: SIGHUP or a file change under the rules path reloads them.

A new rule set is validated in full first. If it is invalid, every problem is
logged as FILE:LINE, a failure counter increments, and the old rules keep
serving (readiness is unaffected). Requests in flight keep the runtime they
started with; clients of upstreams that changed are closed a while later.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from router.config.loader import load_rules, rule_files
from router.core.restart import restart_only_changes
from router.runtime import ConnectionCounter, UpstreamFactory, build_runtime, close_later

if TYPE_CHECKING:
    from router.checksums import ChecksumRegistry
    from router.core.model import Rules
    from router.jobviews import JobViews
    from router.limiting import RequestLimits
    from router.logs import AccessLog
    from router.observability import Metrics
    from router.policygate import PolicyGate
    from router.rollouts import Rollouts
    from router.runtime import Live
    from router.serving.cache import AnswerCache
    from router.state.local import SelectionState
    from router.tasks import TaskGroup

log = logging.getLogger("goproxy_router.reload")

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(paths: tuple[Path, ...]) -> Fingerprint:
    """What identifies the current contents of the rules: names, mtimes, sizes."""
    files, _ = rule_files(paths)
    out = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


class Reloader:
    """Reloads the rules: a new runtime swapped into `live`, and every service that
    depends on the rules given the new ones."""

    def __init__(
        self,
        paths: tuple[Path, ...],
        *,
        started: Rules,
        live: Live,
        metrics: Metrics,
        tasks: TaskGroup,
        selection: SelectionState,
        limits: RequestLimits,
        rollouts: Rollouts,
        checksums: ChecksumRegistry,
        policy: PolicyGate,
        jobs: JobViews,
        answers: AnswerCache,
        access_log: AccessLog,
        count_connection: ConnectionCounter,
        make_client: UpstreamFactory,
        interval: float = 0.5,
    ) -> None:
        self._paths = paths
        self._started = started  # what the process was built from
        self._live = live
        self._metrics = metrics
        self._tasks = tasks
        self._selection = selection
        self._limits = limits
        self._rollouts = rollouts
        self._checksums = checksums
        self._policy = policy
        self._jobs = jobs
        self._answers = answers
        self._access_log = access_log
        self._count_connection = count_connection
        self._make_client = make_client
        self._interval = interval
        self._lock = asyncio.Lock()
        self._seen = fingerprint(paths)

    async def watch(self) -> None:
        """Poll the rules path; reload within about `interval` of a change."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                current = await asyncio.to_thread(fingerprint, self._paths)
                if current != self._seen:
                    self._seen = current
                    await self.reload("file change")
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("rules reload failed unexpectedly; the old rules keep serving")
                self._metrics.rules_reloads.labels("invalid").inc()

    async def reload(self, why: str) -> bool:
        """Load, validate and swap in the rules; False (old rules kept) when invalid."""
        metrics = self._metrics
        async with self._lock:
            self._seen = await asyncio.to_thread(fingerprint, self._paths)
            result = await asyncio.to_thread(load_rules, list(self._paths))
            for problem in result.problems:
                level = logging.WARNING if problem.warning or result.rules else logging.ERROR
                log.log(level, "rules: %s", problem)
            if result.rules is None:
                metrics.rules_reloads.labels("invalid").inc()
                metrics.rules_last_reload_ok.set(0)
                log.error("rules reload (%s) refused: the old rules keep serving", why)
                return False
            previous = self._live.current
            later = restart_only_changes(self._started, result.rules)
            if later:
                log.warning(
                    "%s: changed since this process started; applied on restart only "
                    "(where the command line or environment sets it, that still wins)",
                    ", ".join(later),
                )
            # the policy's databases are loaded before the rules that name them serve
            await self._policy.enforcer.reload(result.rules)
            runtime, retired = await build_runtime(
                result.rules,
                previous.generation + 1,
                previous,
                self._count_connection,
                self._make_client,
            )
            self._live.runtime = runtime
            self._selection.apply_rules(result.rules)
            self._limits.apply_rules(result.rules)
            self._rollouts.apply_rules(result.rules)
            await self._jobs.apply_rules(result.rules)
            self._answers.apply_rules(result.rules)
            self._access_log.apply_rules(result.rules)
            await self._checksums.apply(result.rules)
            metrics.rules_reloads.labels("ok").inc()
            metrics.rules_last_reload_ok.set(1)
            for gauge in (
                metrics.upstream_score,
                metrics.upstream_rtt,
                metrics.upstream_cost,
                metrics.upstream_ejected,
            ):
                gauge.clear()  # upstreams and pools removed from the rules must not linger
            metrics.rules_generation.set(runtime.generation)
            delay = result.rules.server.shutdown_timeout + result.rules.upstreams[0].timeouts.total
            self._tasks.spawn(close_later(retired, min(delay, 900.0)), name="close-retired")
            log.info("rules reloaded (%s): generation %d", why, runtime.generation)
            return True
