"""Policy enforcement for the request path and for `audit`: the pure verdicts of
`router.core.policy`, fed with what they need (the clock, the advisories of a
vulnerability database, the licences detected in a zip).

One `PolicyEnforcer` lives as long as the gateway (or one audit run):

    enforcer = PolicyEnforcer(rules, store=DetectionStore(cache_dir / "licences"))
    tasks.spawn(enforcer.run(), name="policy-vulndb")       # reloads the databases
    ...
    policy = enforcer.policy(tenant_id, decision.route)     # None: no gate, serve as before
    verdict = enforcer.check_version(policy, module, version, info_time)
    if verdict.refused: answer 403 with verdict.message
    ...
    enforcer.update_rules(new_rules)                        # on a rules reload
    enforcer.close()                                        # on shutdown

Every verdict that is not "allow" should go through `record` (metrics by tenant
and rule) before it is answered or served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from router.core import policy as pol
from router.core.model import Rules
from router.licenses import Detection, DetectionStore, IsolatedDetector
from router.observability import Metrics
from router.vulndb import VulnDatabases

_log = logging.getLogger("goproxy_router.policy")

RULE_HEADER = "X-Router-Policy-Rule"
"""On a policy's 403: the rule that refused (licence, age, vulnerability, ...), so that
`audit --gateway` reports the gateway's refusal as its own verdict."""

WARNING_HEADER = "X-Router-Policy-Warning"
"""Set on an answer served under a policy in warn mode that would have refused it."""

InfoTime = Callable[[str], Awaitable[datetime | None]]
"""Fetches the `.info` of one version of the module at hand and returns its time."""

_FRACTION = re.compile(r"(\.\d{6})\d+")


def info_time(body: bytes) -> datetime | None:
    """The `Time` of a `.info` answer (RFC 3339, as Go writes it; nanoseconds and offsets
    allowed), None when absent or not a usable time."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    text = doc.get("Time") if isinstance(doc, dict) else None
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    if parsed.utcoffset() is None or parsed.year < 1900:  # Go's zero time is no time
        return None
    return parsed


class PolicyEnforcer:
    """The policies of one rule set, the vulnerability databases they name and the
    licence detections, for every request."""

    def __init__(
        self,
        rules: Rules,
        *,
        store: DetectionStore | None = None,
        detector: IsolatedDetector | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.databases = VulnDatabases()
        self.store = store
        self.detector = detector or IsolatedDetector()
        self.metrics = metrics
        self.clock = clock
        self._detections: dict[tuple[str, str], Detection] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[Detection]] = {}
        self.update_rules(rules)

    # --- rules ---------------------------------------------------------------

    def update_rules(self, rules: Rules) -> None:
        """Take a new rule set (a reload): databases still named keep their snapshot."""
        self._tenants = {t.id: t.policy for t in rules.tenants}
        self._routes = {r.name: r.policy for r in rules.routes}
        self.judges_licences = any(
            isinstance(b.licenses, pol.LicenceRule)
            for b in (*self._tenants.values(), *self._routes.values())
            if b is not None
        )
        roots: set[str] = set()
        for block in (*self._tenants.values(), *self._routes.values()):
            vulns = block.vulnerabilities if block is not None else None
            if isinstance(vulns, pol.VulnerabilityRule):
                roots.add(vulns.db)
        self.databases.keep_only(roots)
        for root in roots:
            self.databases.get(root)

    async def reload(self, rules: Rules) -> None:
        """`update_rules` on a live gateway: a database the new rules name is loaded
        before it is used (in a worker thread), not at the next periodic check."""
        self.update_rules(rules)
        await asyncio.to_thread(self.databases.refresh_all)

    def policy(self, tenant: str | None, route: str | None) -> pol.Policy | None:
        """The policy of a request of `tenant` (None: anonymous) matched by `route` (the
        routing decision's route name, None when no route matched)."""
        return pol.resolve(
            tenant, self._tenants.get(tenant or ""), route, self._routes.get(route or "")
        )

    def advisories(
        self, policy: pol.Policy, module: str
    ) -> Sequence[pol.Advisory] | pol.DatabaseUnavailable:
        if policy.vulnerabilities is None:
            return ()
        return self.databases.get(policy.vulnerabilities.db).lookup(module)

    # --- the cheap gates: .info, .mod, .zip, list, @latest -------------------

    def check_version(
        self, policy: pol.Policy, module: str, version: str, published: datetime | None
    ) -> pol.Verdict:
        """`.info`, `.mod` and `.zip` of `module@version`, whose `.info` time is
        `published` (see `info_time`; pass None when the policy has no min_age and the
        .info was not fetched)."""
        return pol.judge_version(
            policy, module, version, published, self.clock(), self.advisories(policy, module)
        )

    async def filter_list(
        self, policy: pol.Policy, module: str, versions: Sequence[str], fetch_time: InfoTime
    ) -> pol.ListFilter:
        """The `@v/list` answer under the policy. With a cooldown, the `.info` of the
        newest versions is fetched (down to the first old enough one)."""
        times = await self._times(policy, versions, fetch_time)
        return pol.filter_list(
            policy, module, versions, times, self.clock(), self.advisories(policy, module)
        )

    async def latest(
        self,
        policy: pol.Policy,
        module: str,
        versions: Iterable[str],
        fetch_time: InfoTime,
    ) -> pol.LatestChoice:
        """The version `@latest` should answer: `versions` are the upstream's `@v/list`
        plus its own `@latest` version. Answer the chosen version's `.info`; when none is
        allowed, answer 403 with `first_refusal.message`."""
        now = self.clock()
        advisories = self.advisories(policy, module)
        times: dict[str, datetime | None] = {}
        passed: list[pol.Verdict] = []
        for version in pol.latest_candidates(versions):
            if policy.min_age is not None:
                times[version] = await fetch_time(version)
            verdict = pol.judge_version(
                policy, module, version, times.get(version), now, advisories
            )
            if not verdict.refused:
                return pol.LatestChoice(version, tuple(passed))
            passed.append(verdict)
        return pol.LatestChoice(None, tuple(passed))

    async def _times(
        self, policy: pol.Policy, versions: Sequence[str], fetch_time: InfoTime
    ) -> dict[str, datetime | None]:
        times: dict[str, datetime | None] = {}
        while wanted := pol.versions_needing_time(policy, versions, times, self.clock()):
            batch = wanted[:4]  # a few at once, newest first: most lists stop early
            for version, when in zip(
                batch, await asyncio.gather(*(fetch_time(v) for v in batch)), strict=True
            ):
                times[version] = when
        return times

    # --- licences: after the zip is on disk ----------------------------------

    async def licences(self, module: str, version: str, zip_path: str | Path) -> Detection:
        """The licences of `module@version`, detected once (concurrent callers share one
        detection) and kept in the store; `zip_path` is the module zip, complete."""
        key = (module, version)
        known = self._detections.get(key)
        if known is not None:
            return known
        if self.store is not None:
            stored = await asyncio.to_thread(self.store.get, module, version)
            if stored is not None:
                self._remember(stored)
                return stored
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Detection] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            detection = await self.detector.detect(zip_path, module, version)
            if self.store is not None and not detection.findings.problem:
                await asyncio.to_thread(self.store.put, detection)
            self._remember(detection)
            future.set_result(detection)
            return detection
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._pending[key]

    async def known_licences(self, module: str, version: str) -> Detection | None:
        """The licences of `module@version` if already detected (here or in the store)."""
        known = self._detections.get((module, version))
        if known is None and self.store is not None:
            known = await asyncio.to_thread(self.store.get, module, version)
            if known is not None:
                self._remember(known)
        return known

    def _remember(self, detection: Detection) -> None:
        if len(self._detections) >= 4096:
            self._detections.pop(next(iter(self._detections)))
        self._detections[(detection.module, detection.version)] = detection

    async def check_zip(
        self, policy: pol.Policy, module: str, version: str, zip_path: str | Path
    ) -> pol.Verdict:
        """The licence gate for a `.zip` on disk (None of the cheap gates: call
        `check_version` first, before fetching the zip)."""
        if policy.licenses is None:
            return pol.Verdict(pol.Outcome.ALLOW, module, version)
        detection = await self.licences(module, version, zip_path)
        return pol.judge_licence(policy, module, version, detection.findings)

    # --- bookkeeping -----------------------------------------------------------

    def record(self, tenant: str | None, verdict: pol.Verdict, *, log: bool = True) -> None:
        """Count a refusal or a warning (metrics by tenant and rule) and log it (with
        `log`: a list leaving out many versions logs only its first)."""
        if verdict.outcome is pol.Outcome.ALLOW:
            return
        label = tenant or "anonymous"
        refused = verdict.outcome is pol.Outcome.REFUSE
        if self.metrics is not None:
            counter = self.metrics.policy_refusals if refused else self.metrics.policy_warnings
            counter.labels(label, verdict.rule).inc()
        if log:
            _log.info("policy %s: %s", "refusal" if refused else "warning", verdict.message)

    async def run(self, interval: float = 5.0) -> None:
        """Load the vulnerability databases, then look for changes every `interval`."""
        await self.databases.run(interval)

    def close(self) -> None:
        self.detector.close()
