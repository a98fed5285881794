"""What upstream selection costs: per request in-process, and end to end in the gateway.

1. Microbenchmark: `SelectionState.order` + `observe` + `served` for one request,
   with 2, 8 and 32 candidates, in each mode (`ordered`, `best`, `weighted`).
   The state is warmed first with an hour of simulated traffic (Zipf over 20k
   modules, one request per 0.1 simulated seconds), so the heat window is full,
   as in a busy gateway. Every call is timed on its own (perf_counter_ns);
   median and p99 per request are reported, with the three parts separately.
   The three modes are interleaved in blocks of 1,000 requests.
2. End to end: the real gateway (`goproxy-router serve`, pinned to CPU 0) in
   front of one nginx serving a GOPROXY tree on two loopback ports (pool of two
   upstreams `a`, `b`), loaded by wrk (nginx and wrk pinned to CPU 1). Three
   gateways run side by side, one per configuration, and wrk loads them in
   turn in short runs, the order rotating every round (a shared machine's speed
   drifts; this way a slow spell hits every configuration alike). Rounds in
   which other processes used the CPU are redone. Configurations:
   - `stub`: selection bypassed (a benchmark-only patch in that gateway process:
     `order` returns the pool order, `observe`/`served` do nothing), the true
     "off" baseline;
   - `ordered`: `selection: {mode: ordered}`, the plain ordered pool, which in
     this code still scores every candidate on every request;
   - `weighted`: `selection: {mode: weighted}`, the default.
   The gateway's response cache is off (`cache: {memory: 0}`) so every request
   reaches an upstream and goes through selection. Losses are medians of the
   per-round ratios.

Run: .venv/bin/python benchmarks/selection_bench.py [--quick] [--skip-e2e] [--profile]
Results: stdout (markdown) and benchmarks/out/selection_bench.json.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import itertools
import json
import math
import os
import platform
import pstats
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # the router package, also without an install

from router.core.model import Pool, Rules, Selection, Upstream  # noqa: E402
from router.state.local import SelectionState  # noqa: E402

sys.path.insert(0, str(BENCH_DIR))
# Process handling shared with the pass-through harness (one copy, in run.py).
from run import Children, free_port, process_tree, tail  # noqa: E402

HOST = "127.0.0.1"
MODES: tuple[Literal["ordered", "best", "weighted"], ...] = ("ordered", "best", "weighted")
SIZES = (2, 8, 32)
MICRO_BLOCK = 1_000
TIERS: tuple[Literal["L0", "L1", "L2"], ...] = ("L0", "L1", "L2")
CATALOGUE = 20_000
STEP_SECONDS = 0.1  # simulated time between two requests
WARM_SECONDS = 3600.0  # one heat window
READY_TIMEOUT = 30.0
E2E_CONFIGS = ("stub", "ordered", "weighted")
LOSS_TARGET_PCT = 10.0

# The "stub" gateway: the real CLI, with selection replaced by the plain pool order.
STUB_CODE = """
import sys
from router.core.selection import Candidate, Scored
from router.state.local import SelectionState

def order(self, upstreams, module, *, prefer_fresh=False, mode=None):
    return [Scored(Candidate(u.name, None, 0.0, 0.0), 0.0, 0.0, 0.0, 0.0) for u in upstreams]

SelectionState.order = order
SelectionState.observe = lambda self, name, *, failed, rtt: None
SelectionState.served = lambda self, name, module, nbytes: None
from router.cli import main
sys.exit(main(sys.argv[1:]))
"""

WRK_SCRIPT = r"""
local paths = {}
local counter = 0
function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  f:close()
end
function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class BenchError(Exception):
    """Stops the benchmark with a one-paragraph message."""


# --------------------------------------------------------------------------- microbenchmark


class SimClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def micro_rules(n: int, mode: Literal["ordered", "best", "weighted"]) -> Rules:
    rng = random.Random(n)
    ups = tuple(
        Upstream(
            name=f"up{i:02d}",
            url=f"http://up{i:02d}.invalid",
            tier=TIERS[i % len(TIERS)],
            cost_per_gb=round(rng.uniform(0.0, 0.1), 3),
        )
        for i in range(n)
    )
    pool = Pool(name="main", upstreams=tuple(u.name for u in ups), fallback="any-error")
    return Rules(upstreams=ups, pools=(pool,), selection=Selection(mode=mode))


@dataclass(frozen=True, slots=True)
class MicroResult:
    candidates: int
    mode: str
    iterations: int
    median_us: float
    p99_us: float
    mean_us: float
    best_block_median_us: float  # the least disturbed block: closest to a quiet machine
    order_median_us: float
    observe_median_us: float
    served_median_us: float
    heat_entries: int


def zipf_modules(count: int, rng: random.Random) -> list[str]:
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(CATALOGUE)))
    names = [f"example.com/org{i % 97:02d}/mod{i:05d}" for i in range(CATALOGUE)]
    return [names[i] for i in rng.choices(range(CATALOGUE), cum_weights=cum, k=count)]


Request = tuple[str, float, bool, int]  # module, RTT noise factor, failed, bytes


class Driver:
    """One SelectionState and the synthetic traffic fed to it."""

    def __init__(self, n: int, mode: Literal["ordered", "best", "weighted"], seed: int) -> None:
        rules = micro_rules(n, mode)
        self.mode = mode
        self.clock = SimClock()
        self.state = SelectionState(rules, clock=self.clock, rng=random.Random(seed))
        self.pool = [rules.upstream(name) for name in rules.pools[0].upstreams]
        self.rng = random.Random(seed + 1)
        self.base = {u.name: self.rng.uniform(0.01, 0.3) for u in self.pool}
        self.samples: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self.block_medians: list[float] = []

    def traffic(self, count: int) -> list[Request]:
        mods = zipf_modules(count, self.rng)
        return [
            (m, self.rng.lognormvariate(0, 0.4), self.rng.random() < 0.005, 1 + int(4e5 * f))
            for m, f in zip(mods, (self.rng.random() for _ in mods), strict=True)
        ]

    def one(self, module: str, noise: float, failed: bool, nbytes: int) -> None:
        self.clock.now += STEP_SECONDS
        state = self.state
        name = state.order(self.pool, module)[0].candidate.name
        state.observe(name, failed=failed, rtt=None if failed else self.base[name] * noise)
        if not failed:
            state.served(name, module, nbytes)

    def warm(self) -> None:
        for req in self.traffic(int(WARM_SECONDS / STEP_SECONDS)):
            self.one(*req)

    def timed(self, requests: Sequence[Request]) -> None:
        """`one` for each request, every part timed on its own."""
        state, pool, clock, base = self.state, self.pool, self.clock, self.base
        total, order_ns, observe_ns, served_ns = self.samples
        clock_ns = time.perf_counter_ns
        block: list[int] = []
        for module, noise, failed, nbytes in requests:
            clock.now += STEP_SECONDS
            t0 = clock_ns()
            name = state.order(pool, module)[0].candidate.name
            t1 = clock_ns()
            state.observe(name, failed=failed, rtt=None if failed else base[name] * noise)
            t2 = clock_ns()
            if not failed:
                state.served(name, module, nbytes)
            t3 = clock_ns()
            block.append(t3 - t0)
            order_ns.append(t1 - t0)
            observe_ns.append(t2 - t1)
            served_ns.append(t3 - t2)
        total += block
        self.block_medians.append(statistics.median(block))

    def result(self, n: int) -> MicroResult:
        total = sorted(self.samples[0])
        return MicroResult(
            candidates=n,
            mode=self.mode,
            iterations=len(total),
            median_us=round(total[len(total) // 2] / 1e3, 2),
            p99_us=round(total[int(len(total) * 0.99)] / 1e3, 2),
            mean_us=round(statistics.fmean(total) / 1e3, 2),
            best_block_median_us=round(min(self.block_medians) / 1e3, 2),
            order_median_us=round(statistics.median(self.samples[1]) / 1e3, 2),
            observe_median_us=round(statistics.median(self.samples[2]) / 1e3, 2),
            served_median_us=round(statistics.median(self.samples[3]) / 1e3, 2),
            heat_entries=self.state.heat.size(),
        )


def reference_ms() -> float:
    """A fixed pure-Python workload: its time tracks how fast the (shared) CPU is right now."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(200_000):
        acc += i & 7
    return (time.perf_counter() - t0) * 1e3


def micro(n: int, iterations: int, block: int, seed: int) -> tuple[list[MicroResult], list[float]]:
    """All modes with `n` candidates, interleaved in blocks of `block` requests (the mode
    order rotating), so a slow spell of a shared machine hits every mode alike.
    Returns one result per mode and the reference workload's times, one per block."""
    drivers = [Driver(n, mode, seed) for mode in MODES]
    for d in drivers:
        d.warm()
    traffic = [d.traffic(iterations) for d in drivers]
    reference: list[float] = []
    gc.collect()
    for k, start in enumerate(range(0, iterations, block)):
        reference.append(reference_ms())
        for j in range(len(drivers)):
            i = (j + k) % len(drivers)
            drivers[i].timed(traffic[i][start : start + block])
    return [d.result(n) for d in drivers], reference


def profile(n: int, mode: Literal["ordered", "best", "weighted"], seed: int, top: int) -> str:
    d = Driver(n, mode, seed)
    d.warm()
    reqs = d.traffic(20_000)
    prof = cProfile.Profile()
    prof.enable()
    for req in reqs:
        d.one(*req)
    prof.disable()
    out = Path(tempfile.mkstemp(suffix=".txt")[1])
    try:
        with out.open("w") as f:
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(top)
        return out.read_text()
    finally:
        out.unlink()


def micro_table(results: Sequence[MicroResult]) -> str:
    lines = [
        "| candidates | mode | median µs / request | p99 µs | mean µs | best block median µs | "
        "order() median | observe() median | served() median |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.candidates} | {r.mode} | {r.median_us:.1f} | {r.p99_us:.1f} | "
            f"{r.mean_us:.1f} | {r.best_block_median_us:.1f} | {r.order_median_us:.1f} | "
            f"{r.observe_median_us:.2f} | {r.served_median_us:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- end to end


def find_tool(name: str) -> str:
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    where = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)
    if where is None:
        raise BenchError(f"{name} not found; install it (apt-get install -y nginx wrk)")
    return where


def gateway_binary() -> str:
    beside = Path(sys.executable).with_name("goproxy-router")
    if beside.exists():
        return str(beside)
    return shutil.which("goproxy-router") or str(beside)


def write_tree(root: Path, modules: int) -> list[str]:
    """A GOPROXY tree of small metadata files; returns the request paths."""
    paths: list[str] = []
    for i in range(modules):
        base = f"/example.com/bench/m{i:04d}/@v/"
        folder = root / base.strip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "list").write_text("v1.0.0\n")
        (folder / "v1.0.0.info").write_text('{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}')
        (folder / "v1.0.0.mod").write_text(f"module example.com/bench/m{i:04d}\n\ngo 1.21\n")
        paths += [base + "list", base + "v1.0.0.info", base + "v1.0.0.mod"]
    random.Random(7).shuffle(paths)
    return paths


def nginx_conf(work: Path, tree: Path, ports: Sequence[int]) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"  {k}_temp_path {work / ('nginx-' + k)};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    listens = "\n".join(f"    listen {HOST}:{p};" for p in ports)
    return f"""{user}daemon off;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  types {{ application/json info; text/plain mod; }}
  default_type text/plain;
  server {{
{listens}
    root {tree};
    location / {{ try_files $uri =404; }}
  }}
}}
"""


def gateway_rules(ports: Sequence[int], mode: str) -> str:
    return f"""version: 1
upstreams:
  - {{name: a, url: "http://{HOST}:{ports[0]}"}}
  - {{name: b, url: "http://{HOST}:{ports[1]}"}}
pools:
  main: {{upstreams: [a, b], fallback: not-found}}
default: {{pool: main}}
cache: {{memory: 0}}
selection: {{mode: {mode}}}
"""


def http_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process exited with {proc.returncode}:\n{tail(log)}")
        with suppress(OSError):
            if http_status(port, path) == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"not ready on port {port} within {READY_TIMEOUT:g}s:\n{tail(log)}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of `pid` and its children threads (not reaped children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_idle(max_wait: float, limit_pct: float = 10.0, window: int = 3) -> float | None:
    """Wait until the machine has been quiet (busy < `limit_pct` of one core) for `window`
    seconds in a row, so someone else's load does not land in a measurement.

    Returns the seconds waited, None when it was still busy after `max_wait`."""
    started = time.monotonic()
    quiet = 0
    while quiet < window:
        if time.monotonic() - started >= max_wait:
            return None
        before = machine_busy()[0]
        time.sleep(1.0)
        busy = machine_busy()[0] - before
        quiet = quiet + 1 if 100.0 * busy / os.sysconf("SC_CLK_TCK") < limit_pct else 0
    return round(time.monotonic() - started, 1)


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:8]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass(frozen=True, slots=True)
class E2EResult:
    config: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non2xx: int
    gateway_cpu_us_per_req: float
    other_load_pct: float  # CPU used by processes not ours during the run, % of one core


@dataclass(frozen=True, slots=True)
class E2ESettings:
    duration: int
    warmup: int
    connections: int
    repeat: int
    retries: int
    modules: int
    sut_cpus: str
    load_cpus: str
    idle_wait: int
    noisy_pct: float


def run_wrk(children: Children, wrk: str, script: Path, port: int, paths: Path, seconds: int,
            s: E2ESettings) -> dict[str, Any]:  # fmt: skip
    argv = children.argv(
        [wrk, "-t1", f"-c{s.connections}", f"-d{seconds}s", "--timeout=5s", "--latency",
         "-s", str(script), f"http://{HOST}:{port}", "--", str(paths)],
        s.load_cpus,
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    raise BenchError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def workspace() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="selection-bench-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(slots=True)
class Gateway:
    config: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass(slots=True)
class Bench:
    """The end-to-end setup: nginx upstream, one gateway per configuration, wrk."""

    s: E2ESettings
    children: Children
    work: Path
    wrk: str
    script: Path
    paths: list[str]
    paths_file: Path
    ports: list[int]
    ours: list[int]  # pids whose CPU time is ours: nginx, every gateway
    gateways: dict[str, Gateway]

    def start_gateway(self, config: str, binary: str) -> None:
        mode = "ordered" if config == "stub" else config
        rules = self.work / f"rules-{config}.yaml"
        rules.write_text(gateway_rules(self.ports, mode))
        port = free_port()
        args = ["serve", "--rules", str(rules), "--listen", f"{HOST}:{port}"]
        argv = [sys.executable, "-c", STUB_CODE, *args] if config == "stub" else [binary, *args]
        log = self.work / f"gateway-{config}.log"
        proc = self.children.start(f"gateway-{config}", argv, self.s.sut_cpus, log)
        wait_ready(proc, port, "/readyz", log)
        if http_status(port, self.paths[0]) != 200:
            raise BenchError(f"gateway ({config}) did not serve {self.paths[0]}:\n{tail(log)}")
        self.gateways[config] = Gateway(config, port, proc, log)
        self.ours.append(proc.pid)

    def wrk_run(self, config: str, seconds: int) -> dict[str, Any]:
        port = self.gateways[config].port
        return run_wrk(self.children, self.wrk, self.script, port, self.paths_file, seconds, self.s)

    def measure(self, config: str, round_no: int) -> E2EResult:
        s = self.s
        gw = self.gateways[config]
        if gw.proc.poll() is not None:
            raise BenchError(
                f"gateway ({config}) exited with {gw.proc.returncode}:\n{tail(gw.log)}"
            )
        t0, busy0 = time.monotonic(), machine_busy()[0]
        gw0 = cpu_seconds(gw.proc.pid)
        own0 = sum(map(cpu_seconds, self.ours)) + reaped_children_cpu()
        data = self.wrk_run(config, s.duration)
        gw1 = cpu_seconds(gw.proc.pid)
        own1 = sum(map(cpu_seconds, self.ours)) + reaped_children_cpu()
        t1, busy1 = time.monotonic(), machine_busy()[0]
        other = (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - (own1 - own0)
        n = int(data["requests"])
        return E2EResult(
            config=config,
            round=round_no,
            requests=n,
            rps=round(n / (data["duration_us"] / 1e6), 1),
            p50_ms=data["p50"] / 1e3,
            p90_ms=data["p90"] / 1e3,
            p99_ms=data["p99"] / 1e3,
            max_ms=data["max"] / 1e3,
            errors=int(data["errors"]),
            non2xx=int(data["non2xx"]),
            gateway_cpu_us_per_req=round((gw1 - gw0) * 1e6 / max(1, n), 1),
            other_load_pct=round(max(0.0, 100 * other / (t1 - t0)), 1),
        )


def e2e(s: E2ESettings) -> tuple[list[E2EResult], list[int], list[str]]:
    """Three gateways (stub, ordered, weighted) run side by side, idle but one: wrk
    loads them in turn, in short runs, the order rotating every round, so a slow
    spell of the shared machine hits every configuration alike. A round in which
    someone else's load showed up is redone (up to `retries` extra rounds).
    Returns every run, the undisturbed rounds, and notes."""
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    taskset = shutil.which("taskset")
    if taskset is None:
        print("taskset missing: processes are not pinned", file=sys.stderr)
    results: list[E2EResult] = []
    clean: list[int] = []
    notes: list[str] = []
    with ExitStack() as stack:
        work = stack.enter_context(workspace())
        children = Children(pin=True, taskset=taskset)
        stack.callback(children.stop_all)  # every child stopped, also on errors
        paths = write_tree(work / "tree", s.modules)
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        script = work / "bench.lua"
        script.write_text(WRK_SCRIPT)
        ports = [free_port(), free_port()]
        conf = work / "nginx.conf"
        conf.write_text(nginx_conf(work, work / "tree", ports))
        log = work / "nginx-stderr.log"
        nginx_argv = [nginx, "-p", str(work), "-e", str(log), "-c", str(conf)]
        test = subprocess.run([*nginx_argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise BenchError(f"nginx rejected its config:\n{test.stderr}")
        proc = children.start("nginx", nginx_argv, s.load_cpus, log)
        wait_ready(proc, ports[0], paths[0], log)
        bench = Bench(s, children, work, wrk, script, paths, paths_file, ports,
                      process_tree(proc.pid), {})  # fmt: skip
        binary = gateway_binary()
        for config in E2E_CONFIGS:
            bench.start_gateway(config, binary)
        for config in E2E_CONFIGS:
            if s.warmup:
                bench.wrk_run(config, s.warmup)
        for round_no in range(1, s.repeat + s.retries + 1):
            if len(clean) == s.repeat:
                break
            waited = wait_for_idle(s.idle_wait) if s.idle_wait else 0.0
            if waited is None:
                notes.append(f"round {round_no}: the machine never got quiet before it")
            k = round_no % len(E2E_CONFIGS)
            order = E2E_CONFIGS[k:] + E2E_CONFIGS[:k]
            runs = [bench.measure(config, round_no) for config in order]
            results += runs
            disturbed = max(r.other_load_pct for r in runs) > s.noisy_pct
            if not disturbed:
                clean.append(round_no)
            for r in runs:
                print(
                    f"  round {round_no:2} {r.config:8}: {r.rps:8,.0f} req/s  p50 {r.p50_ms:6.2f}"
                    f" ms  p99 {r.p99_ms:6.2f} ms  cpu {r.gateway_cpu_us_per_req:6.1f} µs/req"
                    f"  errors {r.errors + r.non2xx}  other load {r.other_load_pct:.0f} %"
                    + ("  (round disturbed)" if disturbed else ""),
                    file=sys.stderr,
                    flush=True,
                )
        for config, gw in bench.gateways.items():
            code = children.stop(f"gateway-{config}")
            if code not in (0, -signal.SIGTERM):
                notes.append(f"gateway ({config}) exited with {code} after SIGTERM")
            tracebacks = gw.log.read_text(errors="replace").count("Traceback")
            if tracebacks:
                notes.append(f"gateway ({config}): {tracebacks} tracebacks in its log")
    if len(clean) < s.repeat:
        notes.append(
            f"only {len(clean)} of {s.repeat} rounds were undisturbed"
            + ("; the table uses every round" if not clean else "")
        )
    return results, clean, notes


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    q = statistics.quantiles(values, n=4)
    return round(q[0], 1), round(q[2], 1)


def e2e_summary(results: Sequence[E2EResult], rounds: Sequence[int]) -> dict[str, dict[str, Any]]:
    use = [r for r in results if r.round in rounds] if rounds else list(results)
    by_round: dict[int, dict[str, E2EResult]] = {}
    for r in use:
        by_round.setdefault(r.round, {})[r.config] = r
    out: dict[str, dict[str, Any]] = {}
    for config in E2E_CONFIGS:
        rs = [r for r in use if r.config == config]
        if not rs:
            continue
        paired = {
            base: [
                100 * (1 - runs[config].rps / runs[base].rps)
                for runs in by_round.values()
                if config in runs and base in runs
            ]
            for base in ("ordered", "stub")
        }
        out[config] = {
            "runs": len(rs),
            "rps": statistics.median(r.rps for r in rs),
            "rps_min": min(r.rps for r in rs),
            "rps_max": max(r.rps for r in rs),
            "p50_ms": statistics.median(r.p50_ms for r in rs),
            "p99_ms": statistics.median(r.p99_ms for r in rs),
            "cpu_us_per_req": statistics.median(r.gateway_cpu_us_per_req for r in rs),
            "loss_vs_ordered_pct": statistics.median(paired["ordered"]),
            "loss_vs_ordered_iqr": quartiles(paired["ordered"]),
            "loss_vs_stub_pct": statistics.median(paired["stub"]),
            "loss_vs_stub_iqr": quartiles(paired["stub"]),
            "errors": sum(r.errors + r.non2xx for r in rs),
        }
    return out


def fmt_iqr(iqr: tuple[float, float]) -> str:
    return f"{iqr[0]:.1f} to {iqr[1]:.1f}"


def e2e_table(summary: dict[str, dict[str, Any]]) -> str:
    titles = {
        "stub": "selection bypassed (stub)",
        "ordered": "`mode: ordered` (plain pool)",
        "weighted": "`mode: weighted`",
    }
    lines = [
        "| configuration | req/s (median) | runs min-max | p50 ms | p99 ms | gateway CPU µs/req | "
        "loss vs ordered [IQR] | loss vs stub [IQR] | errors |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for config, v in summary.items():
        lines.append(
            f"| {titles[config]} | {v['rps']:,.0f} | {v['rps_min']:,.0f}-{v['rps_max']:,.0f} | "
            f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_us_per_req']:.0f} | "
            f"{v['loss_vs_ordered_pct']:.1f} % [{fmt_iqr(v['loss_vs_ordered_iqr'])}] | "
            f"{v['loss_vs_stub_pct']:.1f} % [{fmt_iqr(v['loss_vs_stub_iqr'])}] | "
            f"{v['errors']:.0f} |"
        )
    return "\n".join(lines)


def source_state() -> dict[str, Any]:
    """The commit the gateway ran from and the files that differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(BENCH_DIR.parent), *args],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "router").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "router_files_changed": dirty}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations, short wrk runs")
    p.add_argument("--iterations", type=int, default=60_000, help="timed requests per cell")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile weighted mode, 8 candidates")
    p.add_argument("--duration", type=int, default=5, help="wrk seconds per run (5)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured wrk seconds first (3)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--repeat", type=int, default=12, help="undisturbed rounds wanted (12)")
    p.add_argument("--retries", type=int, default=12, help="extra rounds for disturbed ones (12)")
    p.add_argument(
        "--noisy",
        type=float,
        default=15.0,
        help="other processes' CPU (%% of one core) above which a round is redone (15)",
    )
    p.add_argument("--modules", type=int, default=300)
    p.add_argument(
        "--idle-wait",
        type=int,
        default=180,
        help="before each measurement wait up to this many seconds for a quiet machine (0: off)",
    )
    p.add_argument("--sut-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--json", type=Path, default=BENCH_DIR / "out" / "selection_bench.json")
    a = p.parse_args(argv)
    if not 1 <= a.duration <= 300 or not 0 <= a.warmup <= 60 or not 1 <= a.repeat <= 50:
        p.error("--duration 1..300, --warmup 0..60, --repeat 1..50")
    if not 0 <= a.retries <= 50:
        p.error("--retries 0..50")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "source": source_state(),
    }
    if not args.skip_micro:
        iterations = 6_000 if args.quick else args.iterations
        results: list[MicroResult] = []
        speed: dict[str, float] = {}
        for n in SIZES:
            if not args.quick and args.idle_wait and wait_for_idle(args.idle_wait) is None:
                print("  (the machine is busy: numbers may be high)", file=sys.stderr)
            cell, reference = micro(n, iterations, MICRO_BLOCK, args.seed)
            results += cell
            speed[str(n)] = round(max(reference) / min(reference), 2)
            for r in cell:
                print(
                    f"  micro {n:2} {r.mode:8}: median {r.median_us:6.1f} µs  p99 {r.p99_us:6.1f}"
                    f"  best block {r.best_block_median_us:6.1f}",
                    file=sys.stderr,
                )
        print(
            f"## Selection cost per request (order + observe + served), {iterations:,} timed "
            f"requests per cell, modes interleaved in blocks of {MICRO_BLOCK:,}\n"
        )
        print(micro_table(results))
        print(
            "\nslowest / fastest run of a fixed reference loop during each group "
            "(how much the shared CPU's speed varied): "
            + ", ".join(f"{n} candidates x{v}" for n, v in speed.items())
        )
        doc["micro"] = [asdict(r) for r in results]
        doc["micro_reference_spread"] = speed
    if args.profile:
        text = profile(8, "weighted", args.seed, 25)
        print("\n## cProfile, weighted, 8 candidates, 20k requests (by own time)\n")
        print("```\n" + text.strip() + "\n```")
        doc["profile"] = text
    if not args.skip_e2e:
        s = E2ESettings(
            duration=3 if args.quick else args.duration,
            warmup=1 if args.quick else args.warmup,
            connections=args.connections,
            repeat=2 if args.quick else args.repeat,
            modules=args.modules,
            sut_cpus=args.sut_cpus,
            load_cpus=args.load_cpus,
            idle_wait=0 if args.quick else args.idle_wait,
            retries=0 if args.quick else args.retries,
            noisy_pct=args.noisy,
        )
        try:
            e2e_results, clean, notes = e2e(s)
        except BenchError as exc:
            print(f"end-to-end benchmark failed: {exc}", file=sys.stderr)
            return 1
        summary = e2e_summary(e2e_results, clean)
        print(
            f"\n## End to end: gateway on CPU {s.sut_cpus}, nginx + wrk on CPU {s.load_cpus}, "
            f"wrk -t1 -c{s.connections} -d{s.duration}s, {len(clean)} undisturbed round(s) "
            "of the three; medians, losses are medians of per-round ratios\n"
        )
        print(e2e_table(summary))
        loss = summary["weighted"]["loss_vs_ordered_pct"]
        verdict = "met" if loss < LOSS_TARGET_PCT else "NOT met"
        print(f"\nweighted vs ordered: {loss:.1f} % fewer req/s (target: < 10 % loss, {verdict})")
        for note in notes:
            print(f"- {note}")
        doc["e2e"] = {
            "settings": asdict(s),
            "runs": [asdict(r) for r in e2e_results],
            "clean_rounds": clean,
            "summary": summary,
            "notes": notes,
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"json: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
