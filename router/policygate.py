"""Policy gates on the request path: the verdicts of `router.policing.PolicyEnforcer`
applied to each request that is under a policy (`Plan.policy`), after the cache lookup.

Caches keep the upstreams' answers unfiltered; what a tenant is served is decided here,
per request, on the answer the normal path gave (a fast cache hit included):

* `.info`, `.mod`, `.zip` of a refused version: 403 with the verdict's one line. The age
  needs the version's `.info` `Time`, fetched through the normal metadata path (`Lookup`:
  cached and coalesced like any `.info` request of this client);
* `@v/list`: refused versions left out;
* `@latest`: the upstream's answer when its version is allowed, else the `.info` of the
  newest allowed version (403 when none is);
* `mode: warn`: served, with `X-Router-Policy-Warning` (see `warning_header`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from router.core import policy as pol
from router.core.plan import Plan
from router.core.protocol import Kind, ModuleRequest
from router.policing import RULE_HEADER, WARNING_HEADER, InfoTime, PolicyEnforcer, info_time
from router.serving.record import Served
from router.serving.responses import UPSTREAM_HEADER, text_response
from router.spooling import Tee

log = logging.getLogger("goproxy_router.policy")

Execute = Callable[[], Awaitable[web.StreamResponse]]
"""Serves the request at hand through the normal path (caches, then upstreams)."""

Lookup = Callable[[ModuleRequest], Awaitable[web.StreamResponse]]
"""A GET of another GOPROXY file for the same client through the normal path."""

ZipGate = Callable[[Tee, Path | None], Awaitable[web.Response | None]]
"""Called by the answer cache before the first byte of a zip is sent, with the tee and
its stored file (None: a spool): the answer to send instead (a 403), or None to send."""

WARNING = web.RequestKey("policy_warning", str)
ZIP_GATE: web.RequestKey[ZipGate] = web.RequestKey("policy_zip_gate")


def refusal_response(verdict: pol.Verdict) -> web.Response:
    """The 403 of a refused version: the verdict's one line, and its rule."""
    resp = text_response(403, verdict.message)
    resp.headers[RULE_HEADER] = verdict.rule
    return resp


_COPIED = ("Content-Type", UPSTREAM_HEADER, "Age")


async def warning_header(http: web.Request, resp: web.StreamResponse) -> None:
    """`on_response_prepare`: a warned answer carries its warning, streamed ones too."""
    warning = http.get(WARNING)
    if warning and resp.status == 200:
        resp.headers[WARNING_HEADER] = warning


class PolicyGate:
    """Applies the policy of a plan to what the normal path serves."""

    def __init__(self, enforcer: PolicyEnforcer) -> None:
        self.enforcer = enforcer

    async def serve(
        self,
        http: web.Request,
        plan: Plan,
        served: Served,
        execute: Execute,
        lookup: Lookup,
    ) -> web.StreamResponse:
        policy, request = plan.policy, plan.request
        if policy is None or not isinstance(request, ModuleRequest):
            return await execute()
        tenant = plan.identity.tenant_id
        if request.kind is Kind.LIST:
            return await self._list(http, policy, tenant, request, served, execute, lookup)
        if request.kind is Kind.LATEST:
            return await self._latest(http, policy, tenant, request, served, execute, lookup)
        assert request.version is not None
        module, version = request.module, request.version
        if request.kind is Kind.INFO and http.method == "GET":
            resp = await execute()  # the answer is its own evidence
            if resp.status != 200 or not isinstance(resp, web.Response):
                return resp
            published = info_time(_body(resp)) if policy.min_age is not None else None
            verdict = self.enforcer.check_version(policy, module, version, published)
            return self._judged(http, tenant, served, verdict) or resp
        published = None
        if policy.min_age is not None:
            info = await lookup(ModuleRequest(Kind.INFO, module, version))
            if info.status != 200 or not isinstance(info, web.Response):
                return info  # not found, or the upstreams failed: nothing is served
            published = info_time(_body(info))
        verdict = self.enforcer.check_version(policy, module, version, published)
        refused = self._judged(http, tenant, served, verdict)
        if refused is not None:
            return refused
        if request.kind is Kind.ZIP and policy.licenses is not None:
            return await self._zip(http, policy, tenant, module, version, served, execute)
        return await execute()

    async def inspect(self, module: str, version: str, path: Path) -> None:
        """The answer cache's look at a whole zip, before it is kept or served: its
        licences, detected once, when some policy has a licence gate."""
        if not self.enforcer.judges_licences:
            return
        try:
            await self.enforcer.licences(module, version, path)
        except Exception:  # the gate then finds no detection and fails closed
            log.exception("licence detection of %s@%s failed", module, version)

    async def _zip(
        self,
        http: web.Request,
        policy: pol.Policy,
        tenant: str | None,
        module: str,
        version: str,
        served: Served,
        execute: Execute,
    ) -> web.StreamResponse:
        """The licence gate: decided on the whole zip before a byte of it is sent."""
        known = await self.enforcer.known_licences(module, version)
        if known is not None:
            verdict = pol.judge_licence(policy, module, version, known.findings)
            return self._judged(http, tenant, served, verdict) or await execute()
        if http.method != "GET":
            return await execute()  # a HEAD sends no byte of it: judged once examined
        gated = False

        async def gate(tee: Tee, path: Path | None) -> web.Response | None:
            nonlocal gated
            gated = True
            found: pol.LicenceFindings | None
            if path is not None:
                found = (await self.enforcer.licences(module, version, path)).findings
            else:
                found = await self._spooled(tee, module, version)
                if found is None:
                    return None  # the body broke: the cache answers that
            verdict = pol.judge_licence(policy, module, version, found)
            return self._judged(http, tenant, served, verdict)

        http[ZIP_GATE] = gate
        resp = await execute()
        if gated or resp.status != 200 or not isinstance(resp, web.Response):
            return resp
        # a memory hit (a small zip): its body is here, the file it came from is not
        detection = await self._of_bytes(module, version, _body(resp))
        verdict = pol.judge_licence(policy, module, version, detection)
        return self._judged(http, tenant, served, verdict) or resp

    async def _spooled(self, tee: Tee, module: str, version: str) -> pol.LicenceFindings | None:
        """The licences of a zip arriving in a spool: detected by `inspect` once it is
        whole and meets Go's rules (None: the body broke)."""
        known = await self.enforcer.known_licences(module, version)
        if known is None and tee.spool is None and not tee.kept:
            return pol.LicenceFindings(problem="no spool room to examine the zip before serving")
        if known is None:
            await tee.checked.wait()
            known = await self.enforcer.known_licences(module, version)
        if known is not None:
            return known.findings
        if tee.problem is not None:
            return pol.LicenceFindings(problem=f"the zip breaks Go's rules: {tee.problem.message}")
        if tee.error is not None:
            return None
        return pol.LicenceFindings(problem="the zip could not be examined")

    async def _of_bytes(self, module: str, version: str, body: bytes) -> pol.LicenceFindings:
        fd, name = await asyncio.to_thread(tempfile.mkstemp, suffix=".zip")
        try:
            await asyncio.to_thread(_write_all, fd, body)
            return (await self.enforcer.licences(module, version, name)).findings
        finally:
            await asyncio.to_thread(os.unlink, name)

    def _judged(
        self, http: web.Request, tenant: str | None, served: Served, verdict: pol.Verdict
    ) -> web.Response | None:
        """Record a verdict: the 403 for a refusal, None to serve (warned or not)."""
        if verdict.outcome is pol.Outcome.ALLOW:
            return None
        self.enforcer.record(tenant, verdict)
        served.judged(verdict.rule, refused=verdict.refused)
        if verdict.refused:
            return refusal_response(verdict)
        http[WARNING] = verdict.message
        return None

    async def _list(
        self,
        http: web.Request,
        policy: pol.Policy,
        tenant: str | None,
        request: ModuleRequest,
        served: Served,
        execute: Execute,
        lookup: Lookup,
    ) -> web.StreamResponse:
        resp = await execute()
        if http.method != "GET" or resp.status != 200 or not isinstance(resp, web.Response):
            return resp
        lines = [line.strip() for line in _body(resp).decode("utf-8", "replace").splitlines()]
        versions = [line for line in lines if line]
        result = await self.enforcer.filter_list(
            policy, request.module, versions, _time_lookup(request.module, lookup)
        )
        noted = (*result.removed, *result.warned)
        for verdict in noted:
            self.enforcer.record(tenant, verdict, log=verdict is noted[0])
        if noted:
            served.judged(noted[0].rule, refused=False)
        if result.warned:
            http[WARNING] = result.warned[0].message
        if not result.removed:
            return resp
        return _replaced(resp, result.body)

    async def _latest(
        self,
        http: web.Request,
        policy: pol.Policy,
        tenant: str | None,
        request: ModuleRequest,
        served: Served,
        execute: Execute,
        lookup: Lookup,
    ) -> web.StreamResponse:
        resp = await execute()
        if http.method != "GET" or resp.status != 200 or not isinstance(resp, web.Response):
            return resp
        body = _body(resp)
        version = _info_version(body)
        if version is None:
            return resp  # not an answer the go command can use either
        published = info_time(body) if policy.min_age is not None else None
        verdict = self.enforcer.check_version(policy, request.module, version, published)
        if not verdict.refused:
            return self._judged(http, tenant, served, verdict) or resp
        listed = await lookup(ModuleRequest(Kind.LIST, request.module))
        versions: list[str] = [version]
        if listed.status == 200 and isinstance(listed, web.Response):
            versions += _body(listed).decode("utf-8", "replace").split()
        fetch = _time_lookup(request.module, lookup, {version: published})
        choice = await self.enforcer.latest(policy, request.module, versions, fetch)
        for passed in choice.passed_over:
            self.enforcer.record(tenant, passed, log=passed is choice.passed_over[0])
        served.judged(verdict.rule, refused=choice.version is None)
        if choice.version is None:
            return refusal_response(choice.first_refusal or verdict)
        info = await lookup(ModuleRequest(Kind.INFO, request.module, choice.version))
        if info.status != 200 or not isinstance(info, web.Response):
            return info
        return _replaced(info, _body(info))


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _body(resp: web.Response) -> bytes:
    body = resp.body
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


def _replaced(resp: web.Response, body: bytes) -> web.Response:
    headers = {name: resp.headers[name] for name in _COPIED if name in resp.headers}
    return web.Response(status=200, body=body, headers=headers)


def _info_version(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    version = doc.get("Version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and version else None


def _time_lookup(
    module: str, lookup: Lookup, known: dict[str, datetime | None] | None = None
) -> InfoTime:
    """The `.info` time of a version of `module`, fetched through the normal path (None
    when it cannot be had: that version then fails the cooldown)."""
    seen = dict(known or {})

    async def fetch(version: str) -> datetime | None:
        if version not in seen:
            info = await lookup(ModuleRequest(Kind.INFO, module, version))
            ok = info.status == 200 and isinstance(info, web.Response)
            seen[version] = (
                info_time(_body(info)) if ok and isinstance(info, web.Response) else None
            )
        return seen[version]

    return fetch
