"""Pre-warming: `goproxy-router warm --gateway URL go.sum|go.mod|-` and `POST /debug/warm`.

Every module version of the input (`router.core.requirements`) is fetched from the gateway
with plain GOPROXY requests, so tenant rules, checksum verification and policy apply as for
the go command, and the gateway keeps what it fetched in its store. Which files:

- a go.sum version with an `h1:` line for its source: `.info`, `.mod` and `.zip`;
- a go.sum version with only a `/go.mod` line: `.mod` alone (the build needs its go.mod for
  the module graph and never downloads the rest);
- go.mod `require` lines and `go list -m all` lines: `.info`, `.mod` and `.zip` (neither
  says which modules are unpacked, so every zip is fetched).

go.sum is not a lock file: it can hold versions the build no longer selects (fetched
anyway), and holds nothing of the main module. `list` and `@latest` answers are not warmed:
they change, and a build with a complete go.sum does not ask for them.

Each file gets one outcome: `fetched` (the gateway went to an upstream), `present` (it
answered from its cache: `X-Router-Upstream: cache`), `refused` (401/403: the tenant's
rules or the policy said no, with the gateway's reason) or `failed` (anything else, with
the status and reason). At most `jobs` module versions are fetched at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from router.core.modpath import escape_path, escape_version
from router.core.requirements import Requirement, requirements_of
from router.serving.responses import UPSTREAM_HEADER

Outcome = Literal["fetched", "present", "refused", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("fetched", "present", "refused", "failed")
MAX_BODY = 4 << 20  # bytes of go.sum / go.mod a POST /debug/warm may send
MAX_JOBS = 32


def files_of(req: Requirement) -> tuple[str, ...]:
    """The files of a module version the build needs (see the module doc)."""
    return ("mod",) if req.gomod_only else ("info", "mod", "zip")


def file_path(module: str, version: str, ext: str) -> str:
    return f"/{escape_path(module)}/@v/{escape_version(version)}.{ext}"


@dataclass(frozen=True, slots=True)
class Fetched:
    module: str
    version: str
    file: str
    outcome: Outcome
    reason: str = ""


@dataclass(slots=True)
class WarmReport:
    rows: list[Fetched] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.rows if r.outcome == outcome)

    @property
    def ok(self) -> bool:
        return not any(r.outcome in ("refused", "failed") for r in self.rows)

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": {o: self.count(o) for o in OUTCOMES},
            "versions": len({(r.module, r.version) for r in self.rows}),
            "problems": [
                {"module": r.module, "version": r.version, "file": r.file}
                | {"outcome": r.outcome, "reason": r.reason}
                for r in self.rows
                if r.outcome in ("refused", "failed")
            ],
        }

    def lines(self) -> list[str]:
        out = [
            f"{r.module}@{r.version} .{r.file}: {r.outcome}: {r.reason}"
            for r in self.rows
            if r.outcome in ("refused", "failed")
        ]
        counts = ", ".join(f"{self.count(o)} {o}" for o in OUTCOMES)
        versions = len({(r.module, r.version) for r in self.rows})
        out.append(f"warm: {len(self.rows)} file(s) of {versions} module version(s): {counts}")
        return out


async def fetch_one(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[Outcome, str]:
    """GET one file to its end (so the gateway keeps it), its outcome and reason."""
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status == 200:
                async for _ in resp.content.iter_chunked(256 << 10):
                    pass
                from_cache = resp.headers.get(UPSTREAM_HEADER) == "cache"
                return ("present", "") if from_cache else ("fetched", "")
            text = (await resp.content.read(500)).decode("utf-8", "replace").strip()
            reason = f"{resp.status} {text.splitlines()[0] if text else resp.reason or ''}"
            return ("refused" if resp.status in (401, 403) else "failed"), reason.strip()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return "failed", f"{type(exc).__name__}: {exc}".rstrip(": ")


async def warm(
    session: aiohttp.ClientSession,
    gateway: str,
    reqs: Sequence[Requirement],
    *,
    headers: dict[str, str] | None = None,
    jobs: int = 8,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> WarmReport:
    """Fetch every needed file of `reqs` through the gateway at `gateway`."""
    base = gateway.rstrip("/")
    slots = asyncio.Semaphore(max(1, jobs))
    done = 0

    async def one(req: Requirement) -> list[Fetched]:
        nonlocal done
        rows = []
        async with slots:
            for ext in files_of(req):
                url = base + file_path(req.module, req.version, ext)
                outcome, reason = await fetch_one(session, url, headers or {})
                rows.append(Fetched(req.module, req.version, ext, outcome, reason))
        done += 1
        progress(done, len(reqs))
        return rows

    report = WarmReport()
    for rows in await asyncio.gather(*(one(r) for r in reqs)):
        report.rows.extend(rows)
    return report


def client_timeout() -> aiohttp.ClientTimeout:
    """Per file: connecting is quick, a large zip may take its time."""
    return aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)


async def debug_warm(http: web.Request) -> web.StreamResponse:
    """POST /debug/warm (admin) with a go.sum, go.mod or `go list -m all` as the body:
    warm this gateway's store and answer, when done, with the report as JSON. As anonymous,
    or as `?tenant=ID` (with its token in an `X-Warm-Token` header when it needs one)."""
    from router.audit import gateway_headers
    from router.debug import FORBIDDEN, admin_rules

    if admin_rules(http) is None:
        return web.Response(status=403, text=FORBIDDEN)
    if (http.content_length or 0) > MAX_BODY:
        return web.Response(status=413, text=f"warm: body larger than {MAX_BODY >> 20} MiB\n")
    try:
        raw = await http.content.read(MAX_BODY + 1)
        text = raw.decode("utf-8")
        jobs = int(http.query.get("jobs", "8"))
    except (UnicodeDecodeError, ValueError):
        return web.Response(status=400, text="warm: the body must be UTF-8 text, jobs a number\n")
    if len(raw) > MAX_BODY:
        return web.Response(status=413, text=f"warm: body larger than {MAX_BODY >> 20} MiB\n")
    if not 1 <= jobs <= MAX_JOBS:
        return web.Response(status=400, text=f"warm: jobs must be 1 to {MAX_JOBS}\n")
    reqs = requirements_of([("-", text)])
    if not reqs:
        return web.Response(status=400, text="warm: no module versions in the body\n")
    sock = http.transport.get_extra_info("sockname") if http.transport else None
    if not sock:
        return web.Response(status=500, text="warm: cannot tell this gateway's own address\n")
    host = sock[0] if ":" not in sock[0] else f"[{sock[0]}]"
    own = f"{'https' if http.secure else 'http'}://{host}:{sock[1]}"
    headers = gateway_headers(http.query.get("tenant") or None, http.headers.get("X-Warm-Token"))
    # Our own socket: with TLS, its certificate names the public host, not this address.
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(timeout=client_timeout(), connector=connector) as session:
        report = await warm(session, own, reqs, headers=headers, jobs=jobs)
    return web.json_response(report.as_json())
