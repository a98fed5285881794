"""Side-by-side throughput benchmark: upstream nginx, goproxy-router, nginx reverse proxy.

Everything runs on loopback (127.0.0.1) inside one temporary directory:

1. a GOPROXY tree of fixture modules is written to disk and served by an
   nginx instance, the *upstream*;
2. three targets are measured one after another with the same wrk settings:
   the upstream directly, `goproxy-router serve` in pass-through mode (no
   cache) in front of it, and nginx as a plain keep-alive reverse proxy in
   front of it;
3. three workloads: metadata (.info/.mod/list), 1 KiB zips and 1 MiB zips.

The system under test (gateway, or proxy nginx) is pinned to one CPU and the
upstream plus wrk to another, so the comparison is "one core against one core".
Results go to stdout and to benchmarks/out/<timestamp>.{md,json}.

Run: python benchmarks/run.py [--quick] [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

R = TypeVar("R")

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
SMALL_ZIP_BYTES = 1 << 10
LARGE_ZIP_BYTES = 1 << 20
LARGE_MODULES = 16
VERSIONS = ("v1.0.0", "v1.1.0")
FIXTURE_TIME = "2024-01-01T00:00:00Z"
CONTENT_TYPES = {".info": "application/json", ".mod": "text/plain", ".zip": "application/zip"}
TARGETS = ("upstream", "gateway", "nginx-proxy")
WORKLOADS = ("metadata", "zip-1k", "zip-1m")
INSTALL_HINT = "apt-get install -y nginx wrk"
STOP_GRACE_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 30.0
IDLE_LIMIT_PCT = 10.0  # machine-wide busy CPU (% of one core) that still counts as quiet
IDLE_WINDOW_SECONDS = 3  # ... for this many seconds in a row before each run
TARGET_RATIO = 0.3  # the goal: gateway pass-through >= 0.3 x nginx reverse proxy
NOISY_PCT = 10.0  # other processes' load during a run above which the run is flagged

TARGET_TITLES = {
    "upstream": "upstream nginx, direct",
    "gateway": "goproxy-router (pass-through)",
    "nginx-proxy": "nginx reverse proxy",
}
WORKLOAD_TITLES = {
    "metadata": "metadata (.info/.mod/list)",
    "zip-1k": "1 KiB .zip",
    "zip-1m": "1 MiB .zip",
}

# One Lua state per wrk thread: rotate over the paths file, print exact numbers as JSON.
WRK_SCRIPT = r"""
local paths = {}
local counter = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  f:close()
  counter = tonumber(offset) or 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


class BenchError(Exception):
    """A problem that stops the benchmark with a clear message (no traceback)."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Settings:
    duration: int
    warmup: int
    connections: int
    threads: int
    timeout: int
    repeat: int
    retries: int
    modules: int
    idle_wait: int
    pin: bool
    sut_cpus: str
    load_cpus: str
    targets: tuple[str, ...]
    workloads: tuple[str, ...]
    gateway: Path
    gateway_access_log: bool
    out_dir: Path
    keep: bool


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each (2)")
    p.add_argument("--connections", type=int, default=32, help="wrk -c (32)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    p.add_argument("--timeout", type=int, default=5, help="wrk --timeout seconds (5)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument(
        "--retries", type=int, default=3, help="extra runs per cell to replace disturbed ones (3)"
    )
    p.add_argument("--modules", type=int, default=300, help="fixture modules (300)")
    p.add_argument(
        "--idle-wait",
        type=int,
        default=120,
        help="before each run, wait up to this many seconds for other load to stop (120; 0: off)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 s runs, 1 s warm-up, no idle wait, no retries",
    )
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--sut-cpus", default="0", help="taskset -c list for the system under test")
    p.add_argument("--load-cpus", default="1", help="taskset -c list for upstream and wrk")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma list of " + str(TARGETS))
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help="comma list of " + str(WORKLOADS)
    )
    p.add_argument("--gateway", type=Path, help="goproxy-router executable (venv's by default)")
    p.add_argument(
        "--gateway-access-log",
        action="store_true",
        help="keep the gateway's JSON access log on (off by default, like nginx's here)",
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="results folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args(argv)

    duration, warmup = (3, 1) if a.quick else (a.duration, a.warmup)
    if not 1 <= duration <= 600 or not 0 <= warmup <= 60:
        p.error("--duration must be 1..600 and --warmup 0..60 seconds")
    if a.connections < a.threads or a.threads < 1 or a.repeat < 1 or a.modules < 1:
        p.error("need --threads >= 1, --connections >= --threads, --repeat >= 1, --modules >= 1")
    try:
        for spec in (a.sut_cpus, a.load_cpus):
            cpu_list(spec)
    except ValueError:
        p.error("--sut-cpus/--load-cpus take taskset -c lists such as 0 or 0,2 or 1-3")
    targets = tuple(t for t in a.targets.split(",") if t)
    workloads = tuple(w for w in a.workloads.split(",") if w)
    if bad := [t for t in targets if t not in TARGETS] + [
        w for w in workloads if w not in WORKLOADS
    ]:
        p.error(f"unknown target/workload: {', '.join(bad)}")
    return Settings(
        duration=duration,
        warmup=warmup,
        connections=a.connections,
        threads=a.threads,
        timeout=a.timeout,
        repeat=a.repeat,
        retries=0 if a.quick else max(0, a.retries),
        modules=a.modules,
        idle_wait=0 if a.quick else max(0, a.idle_wait),
        pin=not a.no_pin,
        sut_cpus=a.sut_cpus,
        load_cpus=a.load_cpus,
        targets=targets,
        workloads=workloads,
        gateway=a.gateway or default_gateway(),
        gateway_access_log=a.gateway_access_log,
        out_dir=a.out,
        keep=a.keep,
    )


def default_gateway() -> Path:
    """The console script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("goproxy-router")
    if beside.exists():
        return beside
    return Path(shutil.which("goproxy-router") or beside)


def find_tool(name: str) -> str | None:
    """`which`, also looking in the sbin folders a non-root PATH often lacks."""
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def check_tools(settings: Settings) -> dict[str, str]:
    tools = {name: find_tool(name) for name in ("nginx", "wrk", "taskset")}
    missing = [name for name, where in tools.items() if where is None]
    if "taskset" in missing and not settings.pin:
        missing.remove("taskset")
    if missing:
        raise BenchError(
            f"missing: {', '.join(missing)}. Install with: {INSTALL_HINT}"
            + (" (taskset is in util-linux)" if "taskset" in missing else "")
        )
    if not settings.gateway.exists():
        raise BenchError(f"goproxy-router not found at {settings.gateway}; `make install` first")
    if settings.pin:
        allowed = os.sched_getaffinity(0)
        for cpus in (settings.sut_cpus, settings.load_cpus):
            if not cpu_list(cpus) <= allowed:
                raise BenchError(
                    f"CPUs {cpus} are not available (have {sorted(allowed)}); "
                    "pass --sut-cpus/--load-cpus or --no-pin"
                )
    return {name: where for name, where in tools.items() if where is not None}


def cpu_list(spec: str) -> set[int]:
    """Parse a taskset -c list such as '0', '0,2' or '1-3'."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# --------------------------------------------------------------------------- fixture


@dataclass(frozen=True, slots=True)
class Fixture:
    root: Path
    paths: dict[str, list[str]]  # workload -> request paths (URL paths, escaped)
    files: int
    total_bytes: int


def escape_path(path: str) -> str:
    """GOPROXY case escaping: an upper-case letter becomes '!' + its lower case."""
    return "".join("!" + c.lower() if c.isupper() else c for c in path)


def module_zip(module: str, version: str, size: int, rng: random.Random) -> bytes:
    """A real module zip (stored, not compressed) of exactly `size` bytes."""

    def build(payload: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            prefix = f"{module}@{version}/"
            for name, data in (
                ("go.mod", f"module {module}\n".encode()),
                ("data.bin", rng.randbytes(payload)),
            ):
                zf.writestr(zipfile.ZipInfo(prefix + name, (2024, 1, 1, 0, 0, 0)), data)
        return buf.getvalue()

    overhead = len(build(0))
    if overhead > size:
        return build(0)
    return build(size - overhead)


def build_fixture(root: Path, modules: int) -> Fixture:
    """Write the upstream GOPROXY tree; return the request paths of each workload."""
    rng = random.Random(20240101)
    paths: dict[str, list[str]] = {w: [] for w in WORKLOADS}
    files = total = 0

    def write(rel: str, data: bytes) -> None:
        nonlocal files, total
        target = root / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files += 1
        total += len(data)

    def module(path: str, zip_size: int, zip_workload: str) -> None:
        base = "/" + escape_path(path) + "/@v/"
        write(base + "list", "".join(v + "\n" for v in VERSIONS).encode())
        paths["metadata"].append(base + "list")
        for version in VERSIONS:
            stem = base + escape_path(version)
            info = json.dumps({"Version": version, "Time": FIXTURE_TIME}, separators=(",", ":"))
            write(stem + ".info", info.encode())
            write(stem + ".mod", f"module {path}\n\ngo 1.21\n".encode())
            write(stem + ".zip", module_zip(path, version, zip_size, rng))
            paths["metadata"] += [stem + ".info", stem + ".mod"]
            paths[zip_workload].append(stem + ".zip")

    for i in range(modules):
        # Every tenth module has upper-case letters, so its path is !-escaped.
        name = f"github.com/BenchOrg/mod{i:04d}" if i % 10 == 9 else f"example.com/bench/m{i:04d}"
        module(name, SMALL_ZIP_BYTES, "zip-1k")
    for i in range(LARGE_MODULES):
        module(f"example.com/bench/large/m{i:02d}", LARGE_ZIP_BYTES, "zip-1m")
    for workload_paths in paths.values():
        rng.shuffle(workload_paths)
    return Fixture(root=root, paths=paths, files=files, total_bytes=total)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Children:
    """Every process the benchmark starts; `stop_all` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, pin: bool, taskset: str | None) -> None:
        self.pin = pin
        self.taskset = taskset
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, argv: Sequence[str], cpus: str) -> list[str]:
        if self.pin and self.taskset:
            return [self.taskset, "-c", cpus, *argv]
        return list(argv)

    def start(
        self, name: str, argv: Sequence[str], cpus: str, log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
            )
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) ignored SIGTERM; killing", file=sys.stderr)
        # The child leads its own process group: this also ends any nginx workers left.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path, what: str) -> float:
    """Poll GET `path` until 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if http_get(port, path, timeout=1.0)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready within {READY_TIMEOUT_SECONDS:g}s:\n{tail(log)}")


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- nginx configs


def nginx_common(work: Path, name: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {kind}_temp_path {work / (name + '-' + kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
worker_processes 1;
pid {work / (name + ".pid")};
error_log {work / (name + "-error.log")} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  keepalive_timeout 65s;
  keepalive_requests 1000000;
"""


def upstream_conf(work: Path, tree: Path, port: int) -> str:
    return (
        nginx_common(work, "upstream")
        + f"""  sendfile on;
  tcp_nopush on;
  types {{
    application/json info;
    text/plain mod;
    application/zip zip;
  }}
  default_type text/plain;  # the extension-less @v/list
  server {{
    listen {HOST}:{port};
    root {tree};
    location / {{ try_files $uri =404; }}
  }}
}}
"""
    )


def proxy_conf(work: Path, port: int, upstream_port: int) -> str:
    return (
        nginx_common(work, "proxy")
        + f"""  upstream origin {{
    server {HOST}:{upstream_port};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    )


def gateway_rules(upstream_port: int, access_log: bool) -> str:
    """Pass-through: one upstream, no cache; no access log unless asked (nginx has none)."""
    rules = f"""version: 1
upstreams:
  - {{name: origin, url: "http://{HOST}:{upstream_port}"}}
pools:
  main: {{upstreams: [origin], fallback: not-found}}
default: {{pool: main}}
cache: {{memory: 0}}
"""
    return rules if access_log else rules + "logging: {access: false}\n"


def start_nginx(
    children: Children, nginx: str, work: Path, name: str, conf: str, cpus: str
) -> subprocess.Popen[bytes]:
    conf_path = work / f"{name}.conf"
    conf_path.write_text(conf)
    log = work / f"{name}-stderr.log"
    test = subprocess.run(
        [nginx, "-t", "-q", "-p", str(work), "-e", str(log), "-c", str(conf_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if test.returncode != 0:
        raise BenchError(f"nginx rejected {conf_path}:\n{test.stderr}")
    argv = [nginx, "-p", str(work), "-e", str(log), "-c", str(conf_path)]
    return children.start(name, argv, cpus, log)


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Measurement:
    workload: str
    target: str
    run: int
    requests: int
    seconds: float
    rps: float
    mib_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_busy_pct: dict[str, float]
    sut_cpu_us_per_req: float | None
    other_load_pct: float  # CPU (% of one core) used by processes that are not ours
    idle_wait_seconds: float | None  # None: the machine never got quiet before the run
    raw: str = field(repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    ticks: dict[str, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *rest = line.split()
                values = [int(v) for v in rest[:8]]
                idle = values[3] + values[4]
                ticks[name] = (sum(values) - idle, sum(values))
    return ticks


def busy_percent(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    out: dict[str, float] = {}
    for cpu, (busy, total) in after.items():
        b0, t0 = before.get(cpu, (0, 0))
        out[cpu] = round(100.0 * (busy - b0) / max(1, total - t0), 1)
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx master -> worker)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """User+system CPU time of the given processes (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: Sequence[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return round(total_kib / 1024, 1)


@dataclass(frozen=True, slots=True)
class Wrk:
    binary: str
    script: Path
    settings: Settings
    children: Children

    def run(self, port: int, paths_file: Path, seconds: int) -> tuple[dict[str, Any], str]:
        s = self.settings
        argv = self.children.argv(
            [
                self.binary,
                f"-t{s.threads}",
                f"-c{s.connections}",
                f"-d{seconds}s",
                f"--timeout={s.timeout}s",
                "--latency",
                "-s",
                str(self.script),
                f"http://{HOST}:{port}",
                "--",
                str(paths_file),
            ],
            s.load_cpus,
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        out = done.stdout + done.stderr
        for line in out.splitlines():
            if line.startswith("WRK_JSON "):
                return json.loads(line.removeprefix("WRK_JSON ")), out
        raise BenchError(f"wrk gave no result (exit {done.returncode}):\n{out}")


def children_cpu_seconds() -> float:
    """CPU time of our reaped children (wrk runs are reaped right after they end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_wait: float, limit_pct: float = IDLE_LIMIT_PCT) -> float | None:
    """Wait until the whole machine has been quiet (busy < limit_pct of one core) for
    IDLE_WINDOW_SECONDS in a row.

    Between measurements our own processes are idle, so what this sees is someone
    else's load (say, a test suite on the same host). Returns the seconds waited,
    or None when it was still busy after `max_wait`."""
    started = time.monotonic()
    quiet = 0
    while quiet < IDLE_WINDOW_SECONDS:
        if time.monotonic() - started >= max_wait:
            return None
        before = cpu_ticks()
        time.sleep(1.0)
        busy = sum(b - before[c][0] for c, (b, _) in cpu_ticks().items())
        quiet = quiet + 1 if 100.0 * busy / os.sysconf("SC_CLK_TCK") < limit_pct else 0
    return round(time.monotonic() - started, 1)


@dataclass(frozen=True, slots=True)
class Watched:
    """The processes whose CPU time is accounted: the system under test and the upstream."""

    sut: list[int]
    upstream: list[int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """CPU counters at one instant, to diff around a measured wrk run."""

    at: float
    cpus: dict[str, tuple[int, int]]
    sut: float  # CPU seconds of the system under test
    ours: float  # ... of everything we started: SUT, upstream, reaped wrk runs

    @classmethod
    def take(cls, watched: Watched) -> Snapshot:
        own = sorted(set(watched.sut + watched.upstream))
        return cls(
            at=time.monotonic(),
            cpus=cpu_ticks(),
            sut=cpu_seconds(watched.sut),
            ours=cpu_seconds(own) + children_cpu_seconds(),
        )

    def other_load_pct(self, later: Snapshot) -> float:
        """CPU that processes not started by us used in between, in % of one core."""
        busy = sum(b - self.cpus[c][0] for c, (b, _) in later.cpus.items())
        other = busy / os.sysconf("SC_CLK_TCK") - (later.ours - self.ours)
        return round(max(0.0, 100.0 * other / (later.at - self.at)), 1)


def measure(
    wrk: Wrk,
    port: int,
    paths_file: Path,
    workload: str,
    target: str,
    run: int,
    watched: Watched,
) -> Measurement:
    s = wrk.settings
    waited = wait_for_idle(s.idle_wait) if s.idle_wait > 0 else 0.0
    if s.warmup:
        wrk.run(port, paths_file, s.warmup)
    before = Snapshot.take(watched)
    data, raw = wrk.run(port, paths_file, s.duration)
    after = Snapshot.take(watched)
    sut_used = after.sut - before.sut
    seconds = data["duration_us"] / 1e6
    lat = data["latency_us"]
    requests = int(data["requests"])
    return Measurement(
        workload=workload,
        target=target,
        run=run,
        requests=requests,
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1),
        mib_s=round(data["bytes"] / seconds / (1 << 20), 2),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        max_ms=lat["max"] / 1000,
        errors={k: int(v) for k, v in data["errors"].items()},
        cpu_busy_pct=busy_percent(before.cpus, after.cpus),
        sut_cpu_us_per_req=round(sut_used * 1e6 / requests, 1) if requests else None,
        other_load_pct=before.other_load_pct(after),
        idle_wait_seconds=waited,
        raw=raw,
    )


def expected_type(path: str) -> str:
    return CONTENT_TYPES.get(Path(path).suffix, "text/plain")


def check_target(
    port: int, fixture: Fixture, workloads: Sequence[str], sample: int = 40
) -> list[str]:
    """GET a sample of each workload's paths; compare status, type and bytes with the tree."""
    problems: list[str] = []
    for workload in workloads:
        for path in fixture.paths[workload][:sample]:
            want = (fixture.root / path.lstrip("/")).read_bytes()
            try:
                status, ctype, body = http_get(port, path)
            except OSError as exc:
                problems.append(f"GET {path}: {exc}")
                continue
            if status != 200:
                problems.append(f"GET {path}: status {status}: {body[:200]!r}")
            elif body != want:
                problems.append(f"GET {path}: body differs ({len(body)} vs {len(want)} bytes)")
            elif ctype.split(";")[0].strip() != expected_type(path):
                problems.append(f"GET {path}: Content-Type {ctype!r}, want {expected_type(path)}")
    return problems


# --------------------------------------------------------------------------- one run


@dataclass(slots=True)
class TargetReport:
    target: str
    port: int
    ready_seconds: float
    check_problems: list[str]
    rss_mib_after: float
    log_findings: list[str]


@dataclass(slots=True)
class Report:
    started: str
    environment: dict[str, Any]
    settings: dict[str, Any]
    fixture: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    targets: list[TargetReport] = field(default_factory=list)


_LOG_KEYS = ("WARNING", "ERROR", "CRITICAL", "[warn]", "[error]", "[crit]", "[alert]", "[emerg]")
_TIMESTAMP = re.compile(r"^\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)? ?")
_NGINX_DETAIL = re.compile(r"\d+#\d+: \*\d+ |, client: .*$")


def log_findings(log: Path, limit: int = 12) -> list[str]:
    """Warnings, errors and exceptions a child logged, grouped: 'N x message'.

    Timestamps and connection numbers are dropped so repeats group together; a
    traceback is summarised by its last line (the exception)."""
    counts: Counter[str] = Counter()
    in_traceback = False
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if line.startswith("Traceback"):
            in_traceback = True
            continue
        if in_traceback:
            if line.startswith((" ", "\t")) or not line.strip():
                continue
            in_traceback = False
            counts["exception: " + line.strip()[:200]] += 1
            continue
        if any(key in line for key in _LOG_KEYS):
            counts[_NGINX_DETAIL.sub("", _TIMESTAMP.sub("", line)).strip()[:200]] += 1
    found = [f"{n} x {message}" for message, n in counts.most_common(limit)]
    if len(counts) > limit:
        found.append(f"... and {len(counts) - limit} other kinds (see {log.name})")
    return found


def run_target(
    target: str,
    settings: Settings,
    tools: dict[str, str],
    children: Children,
    work: Path,
    fixture: Fixture,
    upstream_port: int,
    upstream_proc: subprocess.Popen[bytes],
    wrk: Wrk,
    report: Report,
) -> None:
    probe = fixture.paths["metadata"][0]
    sut_log = work / f"{target}-stderr.log"
    if target == "upstream":
        port, proc, log = upstream_port, upstream_proc, work / "upstream-error.log"
        ready = 0.0
    elif target == "gateway":
        port = free_port()
        rules = work / "rules.yaml"
        rules.write_text(gateway_rules(upstream_port, settings.gateway_access_log))
        argv = [str(settings.gateway), "serve", "--rules", str(rules), "--listen", f"{HOST}:{port}"]
        proc = children.start(target, argv, settings.sut_cpus, sut_log)
        ready = wait_ready(proc, port, "/readyz", sut_log, "goproxy-router")
        log = sut_log
    else:
        port = free_port()
        conf = proxy_conf(work, port, upstream_port)
        proc = start_nginx(children, tools["nginx"], work, target, conf, settings.sut_cpus)
        ready = wait_ready(proc, port, probe, sut_log, "nginx proxy")
        log = work / f"{target}-error.log"
    print(f"\n== {TARGET_TITLES[target]} on {HOST}:{port}", flush=True)
    problems = check_target(port, fixture, settings.workloads)
    for problem in problems[:5]:
        print(f"  check: {problem}", flush=True)
    # taskset execs its command, so the Popen pid is nginx's or the gateway's own.
    watched = Watched(sut=process_tree(proc.pid), upstream=process_tree(upstream_proc.pid))
    try:
        for workload in settings.workloads:
            paths_file = work / f"paths-{workload}.txt"
            clean = 0
            # A run disturbed by someone else's load is redone, up to --retries extra runs.
            for run in range(settings.repeat + settings.retries):
                if clean == settings.repeat:
                    break
                m = measure(wrk, port, paths_file, workload, target, run, watched)
                report.measurements.append(m)
                clean += not noisy(m)
                print(
                    f"  {workload:9} run {run + 1}: {m.rps:>9,.0f} req/s  p50 {m.p50_ms:6.2f} ms"
                    f"  p99 {m.p99_ms:7.2f} ms  {m.mib_s:8.1f} MiB/s  errors {m.error_count}"
                    f"  cpu {m.cpu_busy_pct}  other {m.other_load_pct}%"
                    + ("  (disturbed)" if noisy(m) else ""),
                    flush=True,
                )
        rss = rss_mib(watched.sut)
    finally:
        if target != "upstream":
            code = children.stop(target)
            if code not in (0, None, -signal.SIGTERM) and target == "gateway":
                problems.append(f"gateway exited with {code} after SIGTERM")
    report.targets.append(
        TargetReport(target, port, round(ready, 2), problems, rss, log_findings(log))
    )


def source_state() -> str:
    """The commit the gateway runs from, and how many files differ from it."""
    repo = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "router"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    state = f"commit {head.stdout.strip()}"
    if changed := len(dirty.stdout.splitlines()):
        state += f" + {changed} changed file(s) in router/"
    return state


def environment(tools: dict[str, str], settings: Settings) -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "unknown"

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gateway_python = first_line([str(settings.gateway.with_name("python")), "-VV"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "nginx": first_line([tools["nginx"], "-v"]),
        "wrk": first_line([tools["wrk"], "-v"]),
        "python": sys.version.split()[0],
        "gateway_python": gateway_python,
        "goproxy_router": version("goproxy-router"),
        "source": source_state(),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
    }


# --------------------------------------------------------------------------- output


def representative(ms: list[Measurement]) -> Measurement:
    """The median run by req/s, among the undisturbed runs when there are any."""
    ordered = sorted([m for m in ms if not noisy(m)] or ms, key=lambda m: m.rps)
    return ordered[(len(ordered) - 1) // 2]


def render(report: Report) -> str:
    env, s, fx = report.environment, report.settings, report.fixture
    pinning = (
        f"system under test on CPU {s['sut_cpus']}, upstream nginx + wrk on CPU {s['load_cpus']}"
        if s["pin"]
        else "no CPU pinning"
    )
    lines = [
        f"# goproxy-router benchmark, {report.started}",
        "",
        f"- nproc {env['nproc']} ({env['cpu_model']}), kernel {env['kernel']}; {pinning}",
        f"- {env['nginx']}; {env['wrk']}; Python {env['python']}; "
        f"goproxy-router {env['goproxy_router']} ({env['source']}), "
        f"aiohttp {env['aiohttp']}, uvloop {env['uvloop']}",
        f"- wrk -t{s['threads']} -c{s['connections']} -d{s['duration']}s "
        f"--timeout {s['timeout']}s, {s['warmup']} s warm-up, {s['repeat']} run(s) per cell "
        "(median by req/s of the undisturbed runs shown)",
        "- gateway rules: one upstream, `cache: {memory: 0}`, access log "
        + ("on" if s["gateway_access_log"] else "off (as nginx's `access_log off`)"),
        f"- fixture: {fx['modules']} modules + {fx['large_modules']} with 1 MiB zips, "
        f"{fx['files']} files, {fx['total_bytes'] / (1 << 20):.1f} MiB; "
        + ", ".join(f"{w} rotates over {n} paths" for w, n in fx["paths"].items()),
        "",
        "| workload | target | req/s | p50 ms | p99 ms | max ms | MiB/s | errors | "
        "SUT CPU µs/req | busy % per CPU | other load % | runs clean/all |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]
    medians: dict[tuple[str, str], Measurement] = {}
    for workload in s["workloads"]:
        for target in s["targets"]:
            cell = [m for m in report.measurements if m.workload == workload and m.target == target]
            if not cell:
                continue
            m = medians[(workload, target)] = representative(cell)
            cpu = " / ".join(f"{v:.0f}" for v in m.cpu_busy_pct.values())
            errors = ", ".join(f"{k} {v}" for k, v in m.errors.items() if v) or "0"
            per_req = "" if m.sut_cpu_us_per_req is None else f"{m.sut_cpu_us_per_req:.0f}"
            lines.append(
                f"| {WORKLOAD_TITLES[workload]} | {TARGET_TITLES[target]} | {m.rps:,.0f} | "
                f"{m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.max_ms:.1f} | {m.mib_s:,.1f} | {errors} | "
                f"{per_req} | {cpu} | {m.other_load_pct:.0f}{' (!)' if noisy(m) else ''} | "
                f"{sum(not noisy(c) for c in cell)}/{len(cell)} |"
            )
    lines += [
        "",
        "| workload | gateway / nginx proxy (req/s) | gateway / upstream (req/s) | "
        "gateway / nginx proxy (per CPU-second) | target >= 0.3 x nginx proxy (lower ratio) |",
        "|---|--:|--:|--:|---|",
    ]
    for workload in s["workloads"]:
        gw = medians.get((workload, "gateway"))
        px = medians.get((workload, "nginx-proxy"))
        up = medians.get((workload, "upstream"))
        if gw is None:
            continue
        vs_proxy = gw.rps / px.rps if px and px.rps else None
        vs_up = gw.rps / up.rps if up and up.rps else None
        per_cpu = None
        if px and px.sut_cpu_us_per_req and gw.sut_cpu_us_per_req:
            per_cpu = px.sut_cpu_us_per_req / gw.sut_cpu_us_per_req
        # nginx on its core can be held back by the load generator's core, which flatters
        # the req/s ratio; judge on the lower of the two.
        known = [r for r in (vs_proxy, per_cpu) if r is not None]
        verdict = "n/a" if not known else ("met" if min(known) >= TARGET_RATIO else "NOT met")
        lines.append(
            f"| {WORKLOAD_TITLES[workload]} | {fmt_ratio(vs_proxy)} | {fmt_ratio(vs_up)} | "
            f"{fmt_ratio(per_cpu)} | {verdict} |"
        )
    notes = []
    for t in report.targets:
        head = (
            f"{TARGET_TITLES[t.target]}: ready in {t.ready_seconds:g}s, RSS {t.rss_mib_after} MiB"
        )
        notes.append(f"- {head}" + ("" if t.check_problems else "; content check passed"))
        notes += [f"  - check: {p}" for p in t.check_problems[:10]]
        notes += [f"  - log: `{line.strip()}`" for line in t.log_findings]
    flagged = [m for m in report.measurements if noisy(m)]
    if flagged:
        notes.append(
            f"- {len(flagged)} of {len(report.measurements)} runs were disturbed by other "
            f"processes (they used more than {NOISY_PCT:g}% of a core, or the machine "
            "never got quiet before the run); they are in the JSON and were redone as "
            "--retries allowed; a cell shows one only when it has no undisturbed run, "
            "marked (!)"
        )
    lines += ["", "Notes:", "", *notes, ""]
    return "\n".join(lines)


def noisy(m: Measurement) -> bool:
    return m.other_load_pct > NOISY_PCT or m.idle_wait_seconds is None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------- main


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Make SIGTERM and SIGINT unwind like Ctrl-C, so every `finally` stops its children.

    SIGINT is set explicitly: a shell starts background jobs with it ignored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def bench(settings: Settings) -> Report:
    tools = check_tools(settings)
    started = datetime.now(UTC)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="goproxy-bench-"))
        if settings.keep:
            print(f"keeping {work}")
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        children = Children(settings.pin, tools.get("taskset"))
        stack.callback(children.stop_all)

        print(f"building fixture in {work} ...", flush=True)
        fixture = build_fixture(work / "tree", settings.modules)
        for workload, paths in fixture.paths.items():
            (work / f"paths-{workload}.txt").write_text("".join(p + "\n" for p in paths))
        script = work / "rotate.lua"
        script.write_text(WRK_SCRIPT)

        report = Report(
            started=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            environment=environment(tools, settings),
            settings={
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
            },
            fixture={
                "modules": settings.modules,
                "large_modules": LARGE_MODULES,
                "files": fixture.files,
                "total_bytes": fixture.total_bytes,
                "paths": {w: len(p) for w, p in fixture.paths.items()},
            },
        )
        upstream_port = free_port()
        conf = upstream_conf(work, fixture.root, upstream_port)
        upstream = start_nginx(children, tools["nginx"], work, "upstream", conf, settings.load_cpus)
        wait_ready(
            upstream,
            upstream_port,
            fixture.paths["metadata"][0],
            work / "upstream-stderr.log",
            "upstream nginx",
        )
        wrk = Wrk(tools["wrk"], script, settings, children)
        for target in settings.targets:
            run_target(
                target,
                settings,
                tools,
                children,
                work,
                fixture,
                upstream_port,
                upstream,
                wrk,
                report,
            )
        return report
    raise AssertionError("unreachable")


def save(report: Any, out_dir: Path, markdown: str, prefix: str = "") -> tuple[Path, Path]:
    """Write a run's markdown and its report (a dataclass) as JSON, named by the time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    md, js = out_dir / f"{prefix}{stamp}.md", out_dir / f"{prefix}{stamp}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return md, js


def guarded(run: Callable[[], R]) -> R | int:
    """A benchmark's result, or the exit code when it failed or was interrupted (every
    child process is stopped either way)."""
    try:
        with stop_signals_interrupt():
            return run()
    except BenchError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted; all child processes stopped", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    report = guarded(lambda: bench(settings))
    if isinstance(report, int):
        return report
    markdown = render(report)
    md, js = save(report, settings.out_dir, markdown)
    print("\n" + markdown)
    print(f"written: {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
