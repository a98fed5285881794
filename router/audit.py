"""`goproxy-router audit`: the gateway's policy applied to a build's module list, for CI.

Reads a go.sum, a go.mod or the output of `go list -m all` (a file, or `-` for
stdin), and checks every module version against the policy that the rules give
the tenant (`--tenant`; routes count, as for a `.zip` request), with the same
core the gateway uses. What it needs (the `.info` time, the `.zip` for
licences) is fetched through a gateway (`--gateway URL`, plain GOPROXY
requests with the tenant's credentials) or else from the upstreams of the pool
the rules route each module to.

A go.sum version with only a `/go.mod` line is needed for its go.mod alone
(the build never unpacks it): it meets the age and vulnerability gates, not
the licence gate, as at the gateway. Prints a table (or `--json`) and exits 1
when anything is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from router.core import policy as pol
from router.core.model import Rules
from router.core.modpath import escape_path, escape_version
from router.core.requirements import Requirement
from router.core.routing import Facts, Router
from router.licenses import MAX_ZIP_BYTES, IsolatedDetector
from router.policing import RULE_HEADER, PolicyEnforcer, info_time

# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------


class FetchError(Exception):
    """A file could not be fetched; the message says why in a few words. `refused`: the
    gateway's policy refused it (the rule, and the gateway's one-line message)."""

    def __init__(self, message: str, refused: tuple[str, str] | None = None) -> None:
        super().__init__(message)
        self.refused = refused


def _file_path(module: str, version: str, ext: str) -> str:
    return f"/{escape_path(module)}/@v/{escape_version(version)}.{ext}"


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], dest: Path | None
) -> bytes:
    """The body of a 200 (written to `dest` when given); FetchError otherwise."""
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.content.read(500)).decode("utf-8", "replace").strip()
                line = text.splitlines()[0] if text else ""
                rule = resp.headers.get(RULE_HEADER) if resp.status == 403 else None
                refused = (rule, line) if rule in pol.RULES else None
                raise FetchError(f"{resp.status} {line}".strip(), refused)
            if dest is None:
                return await resp.content.read(1 << 20)
            size = 0
            with dest.open("wb") as fh:
                async for chunk in resp.content.iter_chunked(256 << 10):
                    size += len(chunk)
                    if size > MAX_ZIP_BYTES:
                        raise FetchError("the zip is larger than 500 MiB")
                    fh.write(chunk)
            return b""
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None


@dataclass(slots=True)
class Source:
    """Where the files come from: base URLs tried in order (404/410 moves on)."""

    session: aiohttp.ClientSession
    bases: Callable[[str], list[str]]
    headers: dict[str, str] = field(default_factory=dict)

    async def fetch(self, module: str, version: str, ext: str, dest: Path | None = None) -> bytes:
        last = FetchError("no upstream to ask")
        for base in self.bases(module):
            try:
                return await _get(
                    self.session, base + _file_path(module, version, ext), self.headers, dest
                )
            except FetchError as exc:
                last = exc
                if not str(exc).startswith(("404", "410")):
                    break
        raise last


def gateway_headers(tenant: str | None, token: str | None) -> dict[str, str]:
    """The credentials the gateway identifies a tenant by (as the go command sends them)."""
    if token and tenant:
        return {"Authorization": "Basic " + base64.b64encode(f"{tenant}:{token}".encode()).decode()}
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {"X-Tenant-ID": tenant} if tenant else {}


def upstream_bases(rules: Rules, tenant: str | None) -> Callable[[str], list[str]]:
    """The upstream URLs of the pool the rules route a module's .zip to, in pool order
    (private upstreams only for the tenant's private modules)."""
    router = Router.build(rules)
    private = next((t.private for t in rules.tenants if t.id == tenant), ())

    def bases(module: str) -> list[str]:
        from router.core.modpath import match_prefix_patterns

        decision = router.decide(Facts(tenant, "zip", module, None, {}))
        ups = [rules.upstream(n) for n in rules.pool(decision.pool).upstreams]
        if any(match_prefix_patterns(p, module) for p in private):
            ups = [u for u in ups if not u.public]
        return [u.url for u in ups]

    return bases


# ---------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    req: Requirement
    verdict: pol.Verdict | None = None  # None: no policy applies
    licences: tuple[str, ...] | None = None  # None: not checked
    licence_note: str = ""
    published: datetime | None = None
    advisories: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def as_json(self, now: datetime) -> dict[str, Any]:
        v = self.verdict
        return {
            "module": self.req.module,
            "version": self.req.version,
            "gomod_only": self.req.gomod_only,
            "licences": list(self.licences) if self.licences is not None else None,
            "licence_note": self.licence_note,
            "published": self.published.isoformat() if self.published else None,
            "age_days": round((now - self.published).total_seconds() / 86400, 1)
            if self.published
            else None,
            "vulnerabilities": list(self.advisories),
            "verdict": "no policy" if v is None else v.outcome.value,
            "rule": v.rule if v else "",
            "message": v.message if v else "",
            "notes": self.notes,
        }


def _affecting(
    advisories: Sequence[pol.Advisory] | pol.DatabaseUnavailable, version: str
) -> tuple[str, ...]:
    if isinstance(advisories, pol.DatabaseUnavailable):
        return ()
    return tuple(a.id for a in advisories if pol.affects(a, version)[0])


async def judge(
    req: Requirement,
    policy: pol.Policy | None,
    source: Source,
    enforcer: PolicyEnforcer,
    workdir: Path,
) -> Row:
    row = Row(req)
    if policy is None:
        return row
    now = enforcer.clock()
    gateway: list[pol.Verdict] = []  # what a gateway enforcing the policy refused itself
    try:
        row.published = info_time(await source.fetch(req.module, req.version, "info"))
    except FetchError as exc:
        if exc.refused is None:
            row.notes.append(f"the .info could not be fetched ({exc})")
        else:
            gateway.append(_gateway_verdict(req, exc.refused))
    advisories = enforcer.advisories(policy, req.module)
    row.advisories = _affecting(advisories, req.version)
    verdicts = [
        pol.judge_vulnerabilities(policy, req.module, req.version, advisories),
        pol.judge_age(policy, req.module, req.version, row.published, now),
    ]
    if policy.licenses is not None and not req.gomod_only and not gateway:
        verdicts.append(await _licence(req, policy, source, enforcer, workdir, row, gateway))
    # a refusal the gateway gave counts before what could not be judged here for lack of
    # the file it refused
    row.verdict = pol.combine([*gateway, *verdicts])
    return row


def _gateway_verdict(req: Requirement, refused: tuple[str, str]) -> pol.Verdict:
    """The gateway's refusal (`MODULE@VERSION: refused by the policy of ORIGIN: REASON`)
    as a verdict."""
    rule, line = refused
    head = f"{req.module}@{req.version}: refused by the policy of "
    origin, _, reason = line.removeprefix(head).partition(": ")
    return pol.Verdict(pol.Outcome.REFUSE, req.module, req.version, rule, reason, origin)


async def _licence(
    req: Requirement,
    policy: pol.Policy,
    source: Source,
    enforcer: PolicyEnforcer,
    workdir: Path,
    row: Row,
    gateway: list[pol.Verdict],
) -> pol.Verdict:
    fd, name = tempfile.mkstemp(dir=workdir, suffix=".zip")
    os.close(fd)
    dest = Path(name)
    try:
        try:
            await source.fetch(req.module, req.version, "zip", dest)
        except FetchError as exc:
            if exc.refused is not None:
                gateway.append(_gateway_verdict(req, exc.refused))
            findings = pol.LicenceFindings(problem=f"the zip could not be fetched ({exc})")
        else:
            findings = (await enforcer.licences(req.module, req.version, dest)).findings
    finally:
        dest.unlink(missing_ok=True)
    row.licences = findings.ids
    row.licence_note = findings.unknown
    return pol.judge_licence(policy, req.module, req.version, findings)


async def audit(
    rules: Rules,
    tenant: str | None,
    reqs: Sequence[Requirement],
    source: Source,
    enforcer: PolicyEnforcer,
    *,
    jobs: int = 8,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[Row]:
    """Every requirement judged, in input order, at most `jobs` at once."""
    router = Router.build(rules)
    slots = asyncio.Semaphore(jobs)
    done = 0
    with tempfile.TemporaryDirectory(prefix="goproxy-audit-") as tmp:

        async def one(req: Requirement) -> Row:
            nonlocal done
            async with slots:
                route = router.decide(Facts(tenant, "zip", req.module, None, {})).route
                row = await judge(req, enforcer.policy(tenant, route), source, enforcer, Path(tmp))
            done += 1
            progress(done, len(reqs))
            return row

        return list(await asyncio.gather(*(one(r) for r in reqs)))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

HEADER = ("MODULE", "VERSION", "LICENCE", "AGE", "VULNERABILITIES", "VERDICT")


def _cells(row: Row, now: datetime) -> tuple[str, ...]:
    if row.licences is None:
        licence = "(go.mod only)" if row.req.gomod_only and row.verdict else "-"
    else:
        licence = ", ".join(row.licences) or "unknown"
        if row.licences and row.licence_note:
            licence += ", unknown"
    age = "-"
    if row.published is not None:
        days = (now - row.published).total_seconds() / 86400
        age = f"{days:.0f}d" if days >= 1 else f"{days * 24:.0f}h"
    elif row.verdict is not None:
        age = "unknown"
    v = row.verdict
    verdict = "no policy" if v is None else v.outcome.value + (f" ({v.rule})" if v.rule else "")
    vulns = ", ".join(row.advisories) or "-"
    return (row.req.module, row.req.version, licence, age, vulns, verdict)


def render_table(rows: Sequence[Row], now: datetime) -> list[str]:
    table = [HEADER, *(_cells(r, now) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    for row in rows:
        if row.verdict is not None and row.verdict.message:
            lines.append(row.verdict.message)
        lines.extend(f"{row.req.module}@{row.req.version}: {note}" for note in row.notes)
    return lines


def summary(rows: Sequence[Row], tenant: str | None) -> str:
    refused = sum(1 for r in rows if r.verdict is not None and r.verdict.refused)
    warned = sum(1 for r in rows if r.verdict is not None and r.verdict.outcome is pol.Outcome.WARN)
    who = f"tenant {tenant}" if tenant else "anonymous requests"
    if all(r.verdict is None for r in rows):
        return f"no policy applies to {who}: {len(rows)} module version(s) not checked"
    text = f"{refused} of {len(rows)} module version(s) refused by the policy of {who}"
    return text + (f", {warned} warned" if warned else "")


class Progress:
    """`audit [###...] 12/240` on a terminal's stderr, rewritten in place; nothing elsewhere."""

    def __init__(self, stream: TextIO, label: str = "audit") -> None:
        self.stream = stream
        self.label = label
        self.on = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.on:
            width = 30
            filled = width * done // max(total, 1)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
            self.stream.flush()

    def clear(self) -> None:
        if self.on:
            self.stream.write("\r\033[K")
            self.stream.flush()


@dataclass(frozen=True, slots=True)
class Options:
    tenant: str | None = None
    token: str | None = None
    gateway: str | None = None
    as_json: bool = False
    jobs: int = 8
    timeout: float = 600.0


async def run_audit(rules: Rules, reqs: Sequence[Requirement], opts: Options) -> list[Row]:
    enforcer = PolicyEnforcer(rules, detector=IsolatedDetector(workers=min(2, os.cpu_count() or 1)))
    await asyncio.to_thread(enforcer.databases.refresh_all)
    progress = Progress(sys.stderr)
    timeout = aiohttp.ClientTimeout(total=opts.timeout, sock_connect=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if opts.gateway:
                gateway = opts.gateway.rstrip("/")
                source = Source(
                    session, lambda _: [gateway], gateway_headers(opts.tenant, opts.token)
                )
            else:
                source = Source(session, upstream_bases(rules, opts.tenant))
            rows = await audit(
                rules, opts.tenant, reqs, source, enforcer, jobs=opts.jobs, progress=progress
            )
    finally:
        progress.clear()
        enforcer.close()
    return rows


def report(rows: Sequence[Row], opts: Options, out: TextIO, now: datetime | None = None) -> int:
    """Print the result; the exit code (1 when anything is refused)."""
    now = now or datetime.now(UTC)
    if opts.as_json:
        doc = {
            "tenant": opts.tenant,
            "summary": summary(rows, opts.tenant),
            "refused": sum(1 for r in rows if r.verdict is not None and r.verdict.refused),
            "modules": [r.as_json(now) for r in rows],
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        for line in [*render_table(rows, now), summary(rows, opts.tenant)]:
            out.write(line + "\n")
    return 1 if any(r.verdict is not None and r.verdict.refused for r in rows) else 0


def read_input(name: str, stdin: TextIO) -> str:
    if name == "-":
        return stdin.read()
    return Path(name).read_text(encoding="utf-8")
