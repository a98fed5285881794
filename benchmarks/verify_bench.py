"""What checksum verification costs: verified vs plain zips, first fetch and cached hits.

    .venv/bin/python benchmarks/verify_bench.py [--quick] [--duration 5] [--rounds 3]

One gateway (`python -m router serve`, pinned to CPU 0) with two tenants on one pool:
`devops` (`verify_checksums: true`) and `plain`, picked by the `X-Tenant-ID` header;
`cache: {memory: 256MiB, dir: <tmp>/store}`. Upstream: tests/support's FixtureProxy
serving real module zips of 1 MiB and 100 MiB from files; checksum DB: tests/support's
TestSumDB (a real signed tlog, `checksum_dbs: [{name: sum.test.example, ...}]`). Both
run in this process, pinned with wrk to CPU 1.

1. First fetch (cold): every fetch is a module version nobody asked for before, one
   request at a time, three variants in rotating order: plain, verified, and verified
   with the .mod fetched first (unmeasured, as the go command does: the zip's checksum
   record is then already proven, so only spooling and hashing remain). Time to
   response headers, to the last byte, and the gateway's CPU per fetch. Around each
   fetch: `sync` and wait until the gateway is idle, so one fetch's background work
   (store commit, disk writeback) does not land in the next. Unmeasured warm-up
   versions (a small module, one zip of each size) are fetched by both tenants first:
   the checksum DB's tree head and tile are then known, so each measured lookup is one
   `/lookup` request plus the proof, and no measured fetch is the gateway's first
   transfer of its size.
2. Cached hits: wrk rotating over the zips each tenant just fetched, in rounds with
   the tenants' order alternating; the median round by req/s is shown, and the
   verified/plain ratio of every round.

Results: stdout (markdown) and benchmarks/out/verify-<UTC stamp>.{md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))  # the router package and tests.support

from cache_bench import GATEWAY, rules  # noqa: E402 - shared with the other harnesses
from run import (  # noqa: E402
    HOST,
    NOISY_PCT,
    WRK_SCRIPT,
    BenchError,
    Children,
    Snapshot,
    Watched,
    cpu_list,
    find_tool,
    free_port,
    guarded,
    log_findings,
    process_tree,
    save,
    source_state,
    tail,
    wait_for_idle,
    wait_ready,
)

from router.core.dirhash import hash_zip_file  # noqa: E402
from tests.support.gomod import (  # noqa: E402
    FixtureModule,
    large_module,
    simple_module,
    write_zip,
)
from tests.support.goproxy_server import FixtureProxy  # noqa: E402
from tests.support.sumdb_server import TestSumDB  # noqa: E402

DB_NAME = "sum.test.example"
TENANTS = {"plain": "plain", "verified": "devops"}  # label -> X-Tenant-ID
MOD_FIRST = "verified, .mod first"  # the go command's order: the zip's record is then known
COLD = (*TENANTS, MOD_FIRST)  # first-fetch variants
SLUGS = {"plain": "plain", "verified": "verified", MOD_FIRST: "modfirst"}

MIB = 1 << 20
WRK_TIMEOUT_SECONDS = 60


def tenant_id(variant: str) -> str:
    return TENANTS["verified"] if variant == MOD_FIRST else TENANTS[variant]


@dataclass(frozen=True, slots=True)
class Size:
    label: str
    slug: str
    nbytes: int
    versions: int  # cold fetches per tenant
    connections: int  # wrk -c for the cached hits


@dataclass(frozen=True, slots=True)
class Config:
    sizes: tuple[Size, ...]
    duration: int
    warmup: int
    rounds: int
    retries: int
    idle_wait: int
    pin: bool
    sut_cpus: str
    load_cpus: str
    out_dir: Path
    keep: bool


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: few versions, 2 s, 1 round")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured wrk seconds before each (1)")
    p.add_argument("--rounds", type=int, default=3, help="cached-hit rounds per tenant (3)")
    p.add_argument(
        "--retries", type=int, default=3, help="extra rounds to replace disturbed ones (3)"
    )
    p.add_argument("--versions-1m", type=int, default=16, help="cold 1 MiB fetches/tenant (16)")
    p.add_argument("--versions-100m", type=int, default=3, help="cold 100 MiB fetches/tenant (3)")
    p.add_argument(
        "--idle-wait", type=int, default=20, help="wait up to N s for a quiet machine per phase"
    )
    p.add_argument("--no-pin", action="store_true", help="do not use taskset/affinity")
    p.add_argument("--sut-cpus", default="0", help="taskset -c list for the gateway (0)")
    p.add_argument("--load-cpus", default="1", help="CPUs for fixtures, client and wrk (1)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="results folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args(argv)
    if a.quick:
        a.versions_1m, a.versions_100m, a.duration, a.rounds, a.idle_wait = 3, 1, 2, 1, 0
        a.retries = 0
    if min(a.duration, a.rounds, a.versions_1m, a.versions_100m) < 1 or a.warmup < 0:
        p.error("--duration, --rounds and --versions-* must be >= 1, --warmup >= 0")
    try:
        for spec in (a.sut_cpus, a.load_cpus):
            cpu_list(spec)
    except ValueError:
        p.error("--sut-cpus/--load-cpus take taskset -c lists such as 0 or 0,2 or 1-3")
    return Config(
        sizes=(
            Size("1 MiB", "z1m", MIB, a.versions_1m, 16),
            Size("100 MiB", "z100m", 100 * MIB, a.versions_100m, 2),
        ),
        duration=a.duration,
        warmup=a.warmup,
        rounds=a.rounds,
        retries=max(0, a.retries),
        idle_wait=max(0, a.idle_wait),
        pin=not a.no_pin,
        sut_cpus=a.sut_cpus,
        load_cpus=a.load_cpus,
        out_dir=a.out,
        keep=a.keep,
    )


# --------------------------------------------------------------------------- fixture


def build_modules(sizes: Sequence[Size]) -> dict[tuple[str, str], list[FixtureModule]]:
    """(size label, variant) -> distinct module versions, one per cold fetch."""
    out: dict[tuple[str, str], list[FixtureModule]] = {}
    for s, size in enumerate(sizes):
        for t, variant in enumerate(COLD):
            path = f"example.com/verifybench/{size.slug}-{SLUGS[variant]}"
            out[(size.label, variant)] = [
                large_module(path, f"v1.0.{i}", size.nbytes, seed=10_000 * s + 1_000 * t + i)
                for i in range(size.versions)
            ]
    return out


def gateway_extra(work: Path, db: TestSumDB) -> str:
    """The rules beyond cache_bench's one-upstream base (JSON is YAML)."""
    cache = {"memory": "256MiB", "dir": str(work / "store")}
    dbs = [{"name": db.name, "key": db.verifier_key, "url": db.url}]
    tenants = [
        {"id": TENANTS["verified"], "pool": "main", "verify_checksums": True},
        {"id": TENANTS["plain"], "pool": "main"},
    ]
    return "".join(
        f"{key}: {json.dumps(value)}\n"
        for key, value in (("cache", cache), ("checksum_dbs", dbs), ("tenants", tenants))
    )


def hash_reference(m: FixtureModule, work: Path) -> float:
    """ms for the gateway's own dirhash of m's zip, in this process, best of 3: the
    hashing part of a verified first fetch, measured alone."""
    path = write_zip(m, work / "reference.zip")
    try:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            with path.open("rb") as fh:
                hash_zip_file(fh, m.prefix)
            best = min(best, time.perf_counter() - started)
        return round(best * 1e3, 1)
    finally:
        path.unlink()


# --------------------------------------------------------------------------- one GET


@dataclass(slots=True)
class Got:
    status: int
    headers_s: float  # request sent -> response headers parsed
    total_s: float  # ... -> last body byte read
    nbytes: int
    upstream: str  # X-Router-Upstream
    sha256: str  # of the body, when asked for
    snippet: bytes  # the start of a non-200 body


_BUF = bytearray(MIB)


def get(port: int, path: str, tenant: str | None = None, *, digest: bool = False) -> Got:
    """One GET on a fresh connection, the body read into a reused buffer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    sha = hashlib.sha256() if digest else None
    view = memoryview(_BUF)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers={"X-Tenant-ID": tenant} if tenant else {})
        resp = conn.getresponse()
        headers_s = time.perf_counter() - started
        nbytes, first = 0, b""
        while n := resp.readinto(view):
            if not nbytes:
                first = bytes(view[: min(n, 300)])
            if sha is not None:
                sha.update(view[:n])
            nbytes += n
        total_s = time.perf_counter() - started
        return Got(
            status=resp.status,
            headers_s=headers_s,
            total_s=total_s,
            nbytes=nbytes,
            upstream=resp.getheader("X-Router-Upstream", ""),
            sha256=sha.hexdigest() if sha is not None else "",
            snippet=first if resp.status != 200 else b"",
        )
    finally:
        conn.close()


def cpu_ns(pids: Sequence[int]) -> int:
    """CPU time of the processes' live threads in ns (schedstat: finer than /proc/PID/stat's
    10 ms ticks, which cannot see a 1 MiB fetch; the gateway's worker threads stay alive)."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def settle(pids: Sequence[int], max_wait: float = 10.0) -> None:
    """Flush dirty pages, then wait until the gateway used < 2 ms of CPU in 50 ms."""
    deadline = time.monotonic() + max_wait
    os.sync()
    before = cpu_ns(pids)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = cpu_ns(pids)
        if now - before < 2_000_000:
            return
        before = now


# --------------------------------------------------------------------------- first fetch


@dataclass(slots=True)
class Fetch:
    size: str
    tenant: str
    version: str
    status: int
    headers_ms: float
    total_ms: float
    nbytes: int
    upstream: str
    gateway_cpu_ms: float
    other_load_pct: float  # other processes' CPU over the fetch and the settling after it
    problem: str = ""


def first_fetches(
    port: int,
    pids: Sequence[int],
    watched: Watched,
    size: Size,
    modules: dict[tuple[str, str], list[FixtureModule]],
    expected: dict[str, tuple[int, str]],
) -> list[Fetch]:
    out: list[Fetch] = []
    for i in range(size.versions):
        order = COLD[i % len(COLD) :] + COLD[: i % len(COLD)]
        for tenant in order:
            m = modules[(size.label, tenant)][i]
            path = m.url_path("zip")
            problem = ""
            if tenant == MOD_FIRST:  # unmeasured: proves the version's checksum record
                mod = get(port, m.url_path("mod"), tenant_id(tenant))
                if mod.status != 200:
                    problem = f".mod first: status {mod.status}: {mod.snippet!r}; "
            settle(pids)
            before, cpu = Snapshot.take(watched), cpu_ns(pids)
            got = get(port, path, tenant_id(tenant))
            settle(pids)
            after = Snapshot.take(watched)
            if got.status != 200:
                problem += f"status {got.status}: {got.snippet!r}"
            elif got.nbytes != expected[path][0]:
                problem += f"{got.nbytes} bytes, upstream has {expected[path][0]}"
            elif got.upstream == "cache":
                problem += "answered from the cache: not a cold fetch"
            f = Fetch(
                size=size.label,
                tenant=tenant,
                version=m.version,
                status=got.status,
                headers_ms=round(got.headers_s * 1e3, 2),
                total_ms=round(got.total_s * 1e3, 2),
                nbytes=got.nbytes,
                upstream=got.upstream,
                gateway_cpu_ms=round((cpu_ns(pids) - cpu) / 1e6, 2),
                other_load_pct=before.other_load_pct(after),
                problem=problem,
            )
            out.append(f)
            print(
                f"  {size.label:>7} {tenant:20} {m.version:8} {f.status} "
                f"headers {f.headers_ms:8.1f} ms  total {f.total_ms:8.1f} ms  "
                f"gateway CPU {f.gateway_cpu_ms:7.1f} ms  other {f.other_load_pct}%  {problem}",
                flush=True,
            )
    return out


def content_check(
    port: int,
    size: Size,
    modules: dict[tuple[str, str], list[FixtureModule]],
    expected: dict[str, tuple[int, str]],
) -> list[str]:
    """Every zip fetched above, again: now a cache hit, with the upstream's exact bytes."""
    problems = []
    for tenant in COLD:
        for m in modules[(size.label, tenant)]:
            path = m.url_path("zip")
            got = get(port, path, tenant_id(tenant), digest=True)
            what = f"{tenant} GET {path}"
            if got.status != 200:
                problems.append(f"{what}: status {got.status}: {got.snippet!r}")
            elif got.sha256 != expected[path][1]:
                problems.append(f"{what}: body differs from the upstream's ({got.nbytes} bytes)")
            elif got.upstream != "cache":
                problems.append(f"{what}: not a cache hit (X-Router-Upstream: {got.upstream})")
    return problems


# --------------------------------------------------------------------------- cached hits


@dataclass(slots=True)
class Hits:
    size: str
    tenant: str
    round: int
    connections: int
    requests: int
    seconds: float
    rps: float
    mib_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    gateway_cpu_us_per_req: float | None
    other_load_pct: float


@dataclass(frozen=True, slots=True)
class Loader:
    """wrk, with the tenant's header, rotating over a paths file (run.py's Lua script)."""

    binary: str
    script: Path
    children: Children
    cpus: str

    def run(
        self, port: int, paths_file: Path, tenant: str, connections: int, seconds: int
    ) -> dict[str, Any]:
        argv = self.children.argv(
            [
                self.binary,
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={WRK_TIMEOUT_SECONDS}s",
                "--latency",
                "-H",
                f"X-Tenant-ID: {tenant}",
                "-s",
                str(self.script),
                f"http://{HOST}:{port}",
                "--",
                str(paths_file),
            ],
            self.cpus,
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        out = done.stdout + done.stderr
        for line in out.splitlines():
            if line.startswith("WRK_JSON "):
                data: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
                return data
        raise BenchError(f"wrk gave no result (exit {done.returncode}):\n{out}")


def cached_hits(
    cfg: Config,
    loader: Loader,
    port: int,
    watched: Watched,
    size: Size,
    paths: dict[str, Path],
) -> list[Hits]:
    """Rounds of one wrk run per tenant; a round in which other processes used more than
    NOISY_PCT of a core is redone, up to cfg.retries extra rounds."""
    out: list[Hits] = []
    clean = 0
    for r in range(cfg.rounds + cfg.retries):
        if clean == cfg.rounds:
            break
        order = ("plain", "verified") if r % 2 == 0 else ("verified", "plain")
        this_round: list[Hits] = []
        for tenant in order:
            tid, c = TENANTS[tenant], size.connections
            if cfg.warmup:
                loader.run(port, paths[tenant], tid, c, cfg.warmup)
            before = Snapshot.take(watched)
            data = loader.run(port, paths[tenant], tid, c, cfg.duration)
            after = Snapshot.take(watched)
            seconds = data["duration_us"] / 1e6
            requests = int(data["requests"])
            lat = data["latency_us"]
            h = Hits(
                size=size.label,
                tenant=tenant,
                round=r,
                connections=c,
                requests=requests,
                seconds=round(seconds, 3),
                rps=round(requests / seconds, 1),
                mib_s=round(data["bytes"] / seconds / MIB, 1),
                p50_ms=lat["p50"] / 1e3,
                p90_ms=lat["p90"] / 1e3,
                p99_ms=lat["p99"] / 1e3,
                max_ms=lat["max"] / 1e3,
                errors=sum(int(v) for v in data["errors"].values()),
                gateway_cpu_us_per_req=(
                    round((after.sut - before.sut) * 1e6 / requests, 1) if requests else None
                ),
                other_load_pct=before.other_load_pct(after),
            )
            this_round.append(h)
            print(
                f"  {size.label:>7} {tenant:20} round {r + 1}: {h.rps:8,.1f} req/s "
                f"{h.mib_s:7,.1f} MiB/s  p50 {h.p50_ms:8.2f} ms  p99 {h.p99_ms:8.2f} ms  "
                f"errors {h.errors}  CPU {h.gateway_cpu_us_per_req} µs/req  "
                f"other {h.other_load_pct}%",
                flush=True,
            )
        out += this_round
        clean += not disturbed(this_round)
    return out


def disturbed(hits: Sequence[Hits]) -> bool:
    return any(h.other_load_pct > NOISY_PCT for h in hits)


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Report:
    started: str
    machine: dict[str, Any]
    config: dict[str, Any]
    fetches: list[Fetch] = field(default_factory=list)
    hits: list[Hits] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gateway_log: list[str] = field(default_factory=list)
    idle_waits: list[float | None] = field(default_factory=list)
    hash_ms: dict[str, float] = field(default_factory=dict)  # size label -> dirhash alone


def machine() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    models = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
    return {
        "nproc": os.cpu_count(),
        "cpu": models[0] if models else "unknown",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "source": source_state(),
    }


def bench(cfg: Config) -> Report:
    wrk_bin, taskset = find_tool("wrk"), find_tool("taskset")
    if wrk_bin is None:
        raise BenchError("missing wrk. Install with: apt-get install -y wrk")
    if cfg.pin and taskset is None:
        raise BenchError("missing taskset (util-linux); or pass --no-pin")
    if cfg.pin and not (cpu_list(cfg.sut_cpus) | cpu_list(cfg.load_cpus)) <= os.sched_getaffinity(
        0
    ):
        raise BenchError(f"CPUs {cfg.sut_cpus}/{cfg.load_cpus} are not all available; --no-pin?")
    report = Report(
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        machine=machine(),
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    )
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="goproxy-verify-bench-"))
        if cfg.keep:
            print(f"keeping {work}")
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        if cfg.pin:  # this process (fixture servers, client) on the load CPUs, like wrk
            os.sched_setaffinity(0, cpu_list(cfg.load_cpus))

        modules = build_modules(cfg.sizes)
        # Unmeasured warm-up versions: a small module, then one zip of each size.
        warm = [simple_module("example.com/verifybench/warmup", "v1.0.0")]
        warm += [
            large_module(f"example.com/verifybench/{size.slug}-warmup", "v1.0.0", size.nbytes)
            for size in cfg.sizes
        ]
        every = [*warm, *(m for ms in modules.values() for m in ms)]
        print(f"fixture: {len(every)} module versions, hashing for the checksum DB ...", flush=True)
        for size in cfg.sizes:
            report.hash_ms[size.label] = hash_reference(modules[(size.label, "plain")][0], work)
        db = TestSumDB(DB_NAME)
        for m in every:
            db.add_module(m)
        db.start_in_thread()
        stack.callback(db.stop)
        print("fixture: writing the upstream's zips ...", flush=True)
        proxy = FixtureProxy(every, name="verify-bench", zip_dir=work / "upstream")
        proxy.start_in_thread(timeout=600)
        stack.callback(proxy.stop)
        expected: dict[str, tuple[int, str]] = {}
        for m in every:
            got = get(proxy.port, m.url_path("zip"), digest=True)
            if got.status != 200:
                raise BenchError(f"fixture proxy: {m.url_path('zip')}: status {got.status}")
            expected[m.url_path("zip")] = (got.nbytes, got.sha256)

        children = Children(cfg.pin, taskset)
        stack.callback(children.stop_all)
        port = free_port()
        rules_path = rules(work, "verify", proxy.port, gateway_extra(work, db))
        log = work / "gateway.log"
        argv = [*GATEWAY, "--rules", str(rules_path), "--listen", f"{HOST}:{port}"]
        proc = children.start("gateway", argv, cfg.sut_cpus, log)
        wait_ready(proc, port, "/readyz", log, "goproxy-router")
        pids = process_tree(proc.pid)
        # Unmeasured: upstream connections, the DB's signed tree head and its tile.
        for m in warm:
            for tenant, tid in TENANTS.items():
                for kind in ("mod", "zip"):
                    got = get(port, m.url_path(kind), tid)
                    if got.status != 200:
                        raise BenchError(
                            f"warm-up {tenant} GET {m.url_path(kind)}: status {got.status}: "
                            f"{got.snippet!r}\n{tail(log)}"
                        )

        loader = Loader(wrk_bin, work / "rotate.lua", children, cfg.load_cpus)
        loader.script.write_text(WRK_SCRIPT)
        watched = Watched(sut=pids, upstream=[os.getpid()])
        for size in cfg.sizes:
            if cfg.idle_wait:
                report.idle_waits.append(wait_for_idle(cfg.idle_wait))
            print(f"\n== first fetch, {size.label} zips ({size.versions} per tenant)", flush=True)
            report.fetches += first_fetches(port, pids, watched, size, modules, expected)
            report.problems += content_check(port, size, modules, expected)
            paths: dict[str, Path] = {}
            for tenant in TENANTS:
                paths[tenant] = work / f"paths-{size.slug}-{tenant}.txt"
                paths[tenant].write_text(
                    "".join(m.url_path("zip") + "\n" for m in modules[(size.label, tenant)])
                )
            if cfg.idle_wait:
                report.idle_waits.append(wait_for_idle(cfg.idle_wait))
            print(f"\n== cached hits, {size.label} zips (wrk -c{size.connections})", flush=True)
            report.hits += cached_hits(cfg, loader, port, watched, size, paths)
        code = children.stop("gateway")
        if code not in (0, None, -signal.SIGTERM):
            report.problems.append(f"gateway exited with {code} after SIGTERM")
        report.gateway_log = log_findings(log)
    return report


# --------------------------------------------------------------------------- output


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return math.nan
    x = (len(s) - 1) * p / 100
    lo = math.floor(x)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def rel(verified: object, plain: object, attr: str) -> str:
    """verified.attr / plain.attr, either side possibly missing."""
    return ratio(getattr(verified, attr, None), getattr(plain, attr, None))


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:.2f}"


@dataclass(frozen=True, slots=True)
class ColdSummary:
    n: int
    headers_p50: float
    p50: float
    p95: float
    max: float
    mib_s: float  # all bytes / all time
    cpu_ms_p50: float
    disturbed: int  # fetches during which other processes used > NOISY_PCT of a core


def cold_summary(fetches: Sequence[Fetch]) -> ColdSummary | None:
    ok = [f for f in fetches if not f.problem]
    if not ok:
        return None
    total = [f.total_ms for f in ok]
    return ColdSummary(
        n=len(ok),
        headers_p50=percentile([f.headers_ms for f in ok], 50),
        p50=percentile(total, 50),
        p95=percentile(total, 95),
        max=max(total),
        mib_s=sum(f.nbytes for f in ok) / MIB / (sum(total) / 1e3),
        cpu_ms_p50=percentile([f.gateway_cpu_ms for f in ok], 50),
        disturbed=sum(f.other_load_pct > NOISY_PCT for f in ok),
    )


def representative(hits: Sequence[Hits], noisy_rounds: set[int]) -> Hits | None:
    """The median round by req/s, among the undisturbed rounds when there are any."""
    ordered = sorted([h for h in hits if h.round not in noisy_rounds] or hits, key=lambda h: h.rps)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def render(report: Report) -> str:
    mc, cfg = report.machine, report.config
    pin = (
        f"gateway on CPU {cfg['sut_cpus']}; fixture upstream, checksum DB, client and wrk on "
        f"CPU {cfg['load_cpus']}"
        if cfg["pin"]
        else "no CPU pinning"
    )
    lines = [
        f"# Verification cost, {report.started}",
        "",
        f"- nproc {mc['nproc']} ({mc['cpu']}), kernel {mc['kernel']}; {pin}",
        f"- Python {mc['python']}, aiohttp {mc['aiohttp']}, uvloop {mc['uvloop']}; "
        f"gateway source: {mc['source']}",
        "- rules: one upstream, tenants `devops` (`verify_checksums: true`) and `plain` on the "
        "same pool, `cache: {memory: 256MiB, dir: <tmp>}`, access log off",
        f"- cached hits: wrk -t1, {cfg['duration']} s runs after {cfg['warmup']} s warm-up, "
        f"{cfg['rounds']} undisturbed round(s) per tenant wanted (up to {cfg['retries']} "
        "extra to replace disturbed ones), order alternating; median undisturbed round by "
        "req/s shown, (!) = other processes used more than "
        f"{NOISY_PCT:g}% of a core during that run",
        "",
        "First fetch (cold: a new module version each time, one request at a time; "
        "latency = request sent to last byte read; disturbed = fetches during which other "
        f"processes used more than {NOISY_PCT:g}% of a core):",
        "",
        "| zip | tenant | fetches | headers p50 ms | p50 ms | p95 ms | max ms | MiB/s | "
        "gateway CPU ms/fetch (p50) | p50 added to plain's | disturbed |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    cold: dict[tuple[str, str], ColdSummary | None] = {}
    warm: dict[tuple[str, str], Hits | None] = {}
    labels = [s["label"] for s in cfg["sizes"]]
    for label in labels:
        for tenant in COLD:
            c = cold[(label, tenant)] = cold_summary(
                [f for f in report.fetches if (f.size, f.tenant) == (label, tenant)]
            )
            if c is None:
                lines.append(f"| {label} | {tenant} | 0 | | | | | | | | |")
                continue
            base = cold.get((label, "plain"))
            added = f"+{c.p50 - base.p50:,.1f} ms" if base and tenant != "plain" else ""
            lines.append(
                f"| {label} | {tenant} | {c.n} | {c.headers_p50:,.1f} | {c.p50:,.1f} | "
                f"{c.p95:,.1f} | {c.max:,.1f} | {c.mib_s:,.0f} | {c.cpu_ms_p50:,.1f} | {added} | "
                f"{c.disturbed} |"
            )
    lines += [
        "",
        "Cached hits (artifact store; wrk rotating over the zips that tenant fetched):",
        "",
        "| zip | tenant | wrk -c | req/s | MiB/s | p50 ms | p99 ms | gateway CPU µs/req | "
        "errors | other load % | req/s over rounds |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    noisy: dict[str, set[int]] = {}
    for label in labels:
        sized = [h for h in report.hits if h.size == label]
        noisy[label] = {h.round for h in sized if h.other_load_pct > NOISY_PCT}
        for tenant in TENANTS:
            rounds = [h for h in sized if h.tenant == tenant]
            h = warm[(label, tenant)] = representative(rounds, noisy[label])
            if h is None:
                continue
            spread = " / ".join(
                f"{x.rps:,.0f}" + (" (!)" if x.round in noisy[label] else "") for x in rounds
            )
            cpu = "" if h.gateway_cpu_us_per_req is None else f"{h.gateway_cpu_us_per_req:,.0f}"
            flag = " (!)" if h.other_load_pct > NOISY_PCT else ""
            lines.append(
                f"| {label} | {tenant} | {h.connections} | {h.rps:,.1f} | {h.mib_s:,.0f} | "
                f"{h.p50_ms:,.2f} | {h.p99_ms:,.2f} | {cpu} | {h.errors} | "
                f"{h.other_load_pct:.0f}{flag} | {spread} |"
            )
    lines += [
        "",
        "Verified / plain (> 1 = verified is slower or costs more; for MiB/s and req/s, < 1):",
        "",
        "| zip | first fetch p50 | first fetch p95 | first fetch MiB/s | gateway CPU per "
        "first fetch | first fetch p50, .mod first | cached req/s | cached p50 | cached p99 | "
        "cached req/s per round |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for label in labels:
        v, p, mf = cold[(label, "verified")], cold[(label, "plain")], cold[(label, MOD_FIRST)]
        vh, ph = warm.get((label, "verified")), warm.get((label, "plain"))
        per_round = []
        for r in sorted({h.round for h in report.hits if h.size == label}):
            pair = {h.tenant: h.rps for h in report.hits if h.size == label and h.round == r}
            flag = " (!)" if r in noisy[label] else ""
            per_round.append(ratio(pair.get("verified"), pair.get("plain")) + flag)
        lines.append(
            f"| {label} | {rel(v, p, 'p50')} | {rel(v, p, 'p95')} | {rel(v, p, 'mib_s')} | "
            f"{rel(v, p, 'cpu_ms_p50')} | {rel(mf, p, 'p50')} | {rel(vh, ph, 'rps')} | "
            f"{rel(vh, ph, 'p50_ms')} | "
            f"{rel(vh, ph, 'p99_ms')} | {' / '.join(per_round)} |"
        )
    notes = [f"- problem: {p}" for p in report.problems]
    notes += [
        f"- fetch problem: {f.size} {f.tenant} {f.version}: {f.problem}"
        for f in report.fetches
        if f.problem
    ]
    notes += [f"- gateway log: `{line}`" for line in report.gateway_log]
    if not report.problems and not any(f.problem for f in report.fetches):
        notes.append(
            "- every first fetch answered 200 from the upstream with the full size; every zip "
            "fetched again was a cache hit with the upstream's exact bytes (sha256)"
        )
    if report.hash_ms:
        notes.append(
            "- reference: the gateway's dirhash (`hash_zip_file`) of one zip, run alone in this "
            "process, best of 3: "
            + ", ".join(f"{label} {ms:,.1f} ms" for label, ms in report.hash_ms.items())
        )
    if None in report.idle_waits:
        notes.append("- the machine was not quiet before every phase (other load)")
    return "\n".join([*lines, "", "Notes:", "", *notes, ""])


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.monotonic()
    report = guarded(lambda: bench(cfg))
    if isinstance(report, int):
        return report
    markdown = render(report)
    md, js = save(report, cfg.out_dir, markdown, prefix="verify-")
    print("\n" + markdown)
    print(f"written: {md} and {js} ({time.monotonic() - started:.0f} s in all)")
    failed = report.problems or any(f.problem for f in report.fetches)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
