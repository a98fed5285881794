"""L3 job views, the pure part: which job a request belongs to, which of its questions
are pinned, and which views to drop.

A CI job runs many go commands; a release landing in the middle must not make two of
them resolve different versions. A request belongs to a job when it carries a job id,
in the `X-CI-Job-ID` header or in a path prefix for stock go commands:

    GOPROXY=https://gw.example/job/$CI_JOB_ID            (pinned view)
    GOPROXY=https://gw.example/job/$CI_JOB_ID/offline    (pinned view, hermetic)

`job` (and `offline` after an id) can never be a module path's first element: a
module path's first element must contain a dot (Go's module.CheckPath), so the prefix
is unambiguous. Within a job, the first answer to each mutable question (`@v/list`,
`@latest`, `.info` of a query) is recorded and served to every later request of the
job; views are keyed by tenant, so another tenant never reads or fills them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from router.core.protocol import Kind, ModuleRequest, SumdbRequest

JOB_HEADER = "X-CI-Job-ID"
JOB_SEGMENT = "/job/"
OFFLINE_SEGMENT = "offline"
MAX_JOB_ID = 200
ANONYMOUS = "-"  # the tenant part of an anonymous job's view (never a tenant id)
# What a job id may hold: CI run/job ids, Jenkins BUILD_TAGs (folders: '/', header only).
_JOB_ID = re.compile(r"[A-Za-z0-9._:+=@~-][A-Za-z0-9._:+=@~/-]*")
_JOB_ID_TEXT = "letters, digits and . _ : + = @ ~ - (and / in the header)"


@dataclass(frozen=True, slots=True)
class JobTarget:
    """A request target with its job prefix taken off.

    `path` is what the GOPROXY protocol parses; `job` the job id (path first, else the
    header); `logged` what the access log's `ci_job` shows (even when refused);
    `problem` a reason for a 400 when the job id is not valid."""

    path: str
    job: str | None = None
    offline: bool = False
    logged: str | None = None
    problem: str | None = None


def split_job(raw_path: str, header: str | None) -> JobTarget:
    """The job of a request (its path prefix wins over `X-CI-Job-ID`) and the rest of
    the path. Never raises: a bad id comes back as `problem`."""
    given = header if header else None
    path = raw_path
    offline = False
    from_path = False
    if raw_path.startswith(JOB_SEGMENT):
        from_path = True
        given, sep, rest = raw_path[len(JOB_SEGMENT) :].partition("/")
        if rest.split("?", 1)[0].split("/", 1)[0] == OFFLINE_SEGMENT:
            offline = True
            rest = rest[len(OFFLINE_SEGMENT) :].lstrip("/")
        path = "/" + rest
        if not sep or not rest:
            return JobTarget(path, logged=given[:MAX_JOB_ID], problem=_missing(given))
    if given is None:
        return JobTarget(path)
    logged = given[:MAX_JOB_ID]
    problem = job_id_problem(given, in_path=from_path)
    if problem is not None:
        return JobTarget(path, logged=logged, problem=problem)
    return JobTarget(path, given, offline, logged)


def _missing(job: str) -> str:
    return (
        f"bad request: nothing after /job/{job[:MAX_JOB_ID]}/: use "
        "GOPROXY=https://HOST/job/JOB_ID (the go command appends the module path)"
    )


def job_id_problem(job: str, *, in_path: bool = False) -> str | None:
    """Why `job` is not a valid job id (None when it is)."""
    where = "in the path /job/ID/" if in_path else f"in {JOB_HEADER}"
    if not job:
        return f"bad request: empty job id {where}"
    if len(job) > MAX_JOB_ID:
        return f"bad request: job id {where} is longer than {MAX_JOB_ID} characters"
    if not _JOB_ID.fullmatch(job):
        return f"bad request: job id {where} may only hold {_JOB_ID_TEXT}"
    return None


# ------------------------------------------------------------------ questions


def question(request: ModuleRequest | SumdbRequest) -> str | None:
    """The mutable question a request asks (None for immutable answers and checksum-DB
    requests): its answer is pinned in a job's view."""
    if isinstance(request, SumdbRequest) or request.immutable:
        return None
    if request.kind is Kind.LIST:
        return f"{request.module}/@v/list"
    if request.kind is Kind.LATEST:
        return f"{request.module}/@latest"
    if request.kind is Kind.INFO:
        return f"{request.module}/@v/{request.version}.info"
    return None


def view_id(tenant: str | None, job: str) -> str:
    """One string naming a tenant's job view (tenant ids never hold '/' nor are '-')."""
    return f"{tenant or ANONYMOUS}/{job}"


def view_parts(view: str) -> tuple[str | None, str]:
    tenant, _, job = view.partition("/")
    return (None if tenant == ANONYMOUS else tenant), job


def pinnable(status: int) -> bool:
    """Only a 200 is pinned: a not-found or an error (or an offline refusal) is not an
    answer a later step must keep seeing."""
    return status == 200


# ------------------------------------------------------------------ bounds


@dataclass(frozen=True, slots=True)
class Live:
    """What the bounds look at for one view."""

    view: str
    touched: float
    bytes: int


def to_drop(
    views: Sequence[Live],
    now: float,
    *,
    ttl: float,
    max_views: int,
    max_bytes: int,
    keep: str | None = None,
) -> list[tuple[str, str]]:
    """The views to drop and why (`idle`, `count`, `bytes`): idle past `ttl` first,
    then the least recently used until at most `max_views` views of at most
    `max_bytes` in all are left. `keep` (the view being written) goes last of all."""
    drops: list[tuple[str, str]] = []
    left: list[Live] = []
    for v in views:
        if now - v.touched >= ttl:
            drops.append((v.view, "idle"))
        else:
            left.append(v)
    left.sort(key=lambda v: (v.view == keep, v.touched))
    count = len(left)
    total = sum(v.bytes for v in left)
    for v in left:
        if count <= max_views and total <= max_bytes:
            break
        drops.append((v.view, "count" if count > max_views else "bytes"))
        count -= 1
        total -= v.bytes
    return drops


# ------------------------------------------------------------------ offline


def offline_mode(network: str, route: str | None, route_offline: bool, job_offline: bool) -> str:
    """Why a request is served offline ('' when it is not): the gateway's
    `network: offline`, its route's `offline: true`, or its job's `/offline` path."""
    if network == "offline":
        return "network: offline"
    if route_offline:
        return f"route {route}: offline"
    if job_offline:
        return "job offline (/job/ID/offline)"
    return ""


def offline_refusal(mode: str, request: ModuleRequest | SumdbRequest) -> str:
    """The 404 reason for what an offline request finds nowhere in the cache."""
    what = request.module or "this request"
    if isinstance(request, ModuleRequest) and request.version is not None:
        what = f"{request.module}@{request.version}"
    return (
        f"not found: offline mode ({mode}): {what} is not in the cache here and "
        "nothing is fetched from any upstream"
    )
