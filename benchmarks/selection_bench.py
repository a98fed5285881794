"""What upstream selection costs: per request in-process, and end to end in the gateway.

1. Microbenchmark: `SelectionState.order` + `observe` + `served` for one request,
   with 2, 8 and 32 candidates, in each mode (`ordered`, `best`, `weighted`).
   The state is warmed first with an hour of simulated traffic (Zipf over 20k
   modules, one request per 0.1 simulated seconds), so the heat window is full,
   as in a busy gateway. Every call is timed on its own (perf_counter_ns);
   median and p99 per request are reported, with the three parts separately.
2. End to end: the real gateway (`goproxy-router serve`, pinned to CPU 0) in
   front of one nginx serving a GOPROXY tree on two loopback ports (pool of two
   upstreams `a`, `b`), loaded by wrk (nginx and wrk pinned to CPU 1). Three
   configurations, restarted for every run and alternated:
   - `stub`: selection bypassed (a benchmark-only patch in the gateway process:
     `order` returns the pool order, `observe`/`served` do nothing), the true
     "off" baseline;
   - `ordered`: `selection: {mode: ordered}`, the plain ordered pool, which in
     this code still scores every candidate on every request;
   - `weighted`: `selection: {mode: weighted}`, the default.
   The gateway's response cache is off (`cache: {memory: 0}`) so every request
   reaches an upstream and goes through selection.

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
import os
import platform
import pstats
import random
import shutil
import signal
import socket
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

from router.config.model import Pool, Rules, Selection, Upstream  # noqa: E402
from router.state.local import SelectionState  # noqa: E402

HOST = "127.0.0.1"
MODES: tuple[Literal["ordered", "best", "weighted"], ...] = ("ordered", "best", "weighted")
SIZES = (2, 8, 32)
CATALOGUE = 20_000
STEP_SECONDS = 0.1  # simulated time between two requests
WARM_SECONDS = 3600.0  # one heat window
READY_TIMEOUT = 30.0
STOP_GRACE = 15.0
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
            tier=("L0", "L1", "L2")[i % 3],  # type: ignore[arg-type]
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
    order_median_us: float
    observe_median_us: float
    served_median_us: float
    heat_entries: int


def zipf_modules(count: int, rng: random.Random) -> list[str]:
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(CATALOGUE)))
    names = [f"example.com/org{i % 97:02d}/mod{i:05d}" for i in range(CATALOGUE)]
    return [names[i] for i in rng.choices(range(CATALOGUE), cum_weights=cum, k=count)]


class Driver:
    """One SelectionState and the synthetic traffic fed to it."""

    def __init__(self, n: int, mode: Literal["ordered", "best", "weighted"], seed: int) -> None:
        rules = micro_rules(n, mode)
        self.clock = SimClock()
        self.state = SelectionState(rules, clock=self.clock, rng=random.Random(seed))
        self.pool = [rules.upstream(name) for name in rules.pools[0].upstreams]
        self.rng = random.Random(seed + 1)
        self.base = {u.name: self.rng.uniform(0.01, 0.3) for u in self.pool}

    def traffic(self, count: int) -> list[tuple[str, float, bool, int]]:
        """(module, rtt noise factor, failed, bytes) for `count` requests."""
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


def micro(
    n: int, mode: Literal["ordered", "best", "weighted"], iterations: int, seed: int
) -> MicroResult:
    d = Driver(n, mode, seed)
    d.warm()
    state, pool, clock, base = d.state, d.pool, d.clock, d.base
    total: list[int] = []
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    clock_ns = time.perf_counter_ns
    for module, noise, failed, nbytes in d.traffic(iterations):
        clock.now += STEP_SECONDS
        t0 = clock_ns()
        name = state.order(pool, module)[0].candidate.name
        t1 = clock_ns()
        state.observe(name, failed=failed, rtt=None if failed else base[name] * noise)
        t2 = clock_ns()
        if not failed:
            state.served(name, module, nbytes)
        t3 = clock_ns()
        total.append(t3 - t0)
        parts[0].append(t1 - t0)
        parts[1].append(t2 - t1)
        parts[2].append(t3 - t2)
    total.sort()
    return MicroResult(
        candidates=n,
        mode=mode,
        iterations=iterations,
        median_us=round(total[len(total) // 2] / 1e3, 2),
        p99_us=round(total[int(len(total) * 0.99)] / 1e3, 2),
        mean_us=round(statistics.fmean(total) / 1e3, 2),
        order_median_us=round(statistics.median(parts[0]) / 1e3, 2),
        observe_median_us=round(statistics.median(parts[1]) / 1e3, 2),
        served_median_us=round(statistics.median(parts[2]) / 1e3, 2),
        heat_entries=state.heat.size(),
    )


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
        "| candidates | mode | median µs / request | p99 µs | mean µs | "
        "order() median | observe() median | served() median |",
        "|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.candidates} | {r.mode} | {r.median_us:.1f} | {r.p99_us:.1f} | "
            f"{r.mean_us:.1f} | {r.order_median_us:.1f} | {r.observe_median_us:.2f} | "
            f"{r.served_median_us:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- end to end


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


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


class Children:
    """Processes we started; each is stopped by its own id (SIGTERM, then SIGKILL)."""

    def __init__(self, taskset: str | None) -> None:
        self.taskset = taskset
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def pinned(self, argv: Sequence[str], cpus: str) -> list[str]:
        return [self.taskset, "-c", cpus, *argv] if self.taskset else list(argv)

    def start(
        self, name: str, argv: Sequence[str], cpus: str, log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.pinned(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
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
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) ignored SIGTERM; killing", file=sys.stderr)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: nginx workers too
        return proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


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


def tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


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
    run: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non2xx: int
    gateway_cpu_us_per_req: float
    machine_busy_pct: float  # of all CPUs, during the run
    idle_wait_s: float | None  # waited for a quiet machine first; None: it never got quiet


@dataclass(frozen=True, slots=True)
class E2ESettings:
    duration: int
    warmup: int
    connections: int
    repeat: int
    modules: int
    sut_cpus: str
    load_cpus: str
    idle_wait: int


def run_wrk(children: Children, wrk: str, script: Path, port: int, paths: Path, seconds: int,
            s: E2ESettings) -> dict[str, Any]:  # fmt: skip
    argv = children.pinned(
        [wrk, "-t1", f"-c{s.connections}", f"-d{seconds}s", "--timeout=5s", "--latency",
         "-s", str(script), f"http://{HOST}:{port}", "--", str(paths)],
        s.load_cpus,
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    raise BenchError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}{done.stderr}")


@contextmanager
def workspace() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="selection-bench-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def e2e(s: E2ESettings) -> tuple[list[E2EResult], list[str]]:
    nginx, wrk = find_tool("nginx"), find_tool("wrk")
    taskset = shutil.which("taskset")
    if taskset is None:
        print("taskset missing: processes are not pinned", file=sys.stderr)
    results: list[E2EResult] = []
    notes: list[str] = []
    with ExitStack() as stack:
        work = stack.enter_context(workspace())
        children = Children(taskset)
        stack.callback(children.stop_all)  # every child stopped, also on errors
        tree = work / "tree"
        paths = write_tree(tree, s.modules)
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        script = work / "bench.lua"
        script.write_text(WRK_SCRIPT)
        ports = [free_port(), free_port()]
        conf = work / "nginx.conf"
        conf.write_text(nginx_conf(work, tree, ports))
        log = work / "nginx-stderr.log"
        nginx_argv = [nginx, "-p", str(work), "-e", str(log), "-c", str(conf)]
        test = subprocess.run([*nginx_argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise BenchError(f"nginx rejected its config:\n{test.stderr}")
        proc = children.start("nginx", nginx_argv, s.load_cpus, log)
        wait_ready(proc, ports[0], paths[0], log)
        gateway = gateway_binary()
        for run in range(s.repeat):
            # Alternate the order so a slow drift of the machine hits every config alike.
            order = E2E_CONFIGS if run % 2 == 0 else tuple(reversed(E2E_CONFIGS))
            for config in order:
                mode = "ordered" if config == "stub" else config
                rules = work / f"rules-{config}.yaml"
                rules.write_text(gateway_rules(ports, mode))
                port = free_port()
                args = ["serve", "--rules", str(rules), "--listen", f"{HOST}:{port}"]
                argv = (
                    [sys.executable, "-c", STUB_CODE, *args]
                    if config == "stub"
                    else [gateway, *args]
                )
                waited = wait_for_idle(s.idle_wait) if s.idle_wait else 0.0
                glog = work / f"gateway-{config}-{run}.log"
                gw = children.start("gateway", argv, s.sut_cpus, glog)
                try:
                    wait_ready(gw, port, "/readyz", glog)
                    if http_status(port, paths[0]) != 200:
                        raise BenchError(f"gateway did not serve {paths[0]}:\n{tail(glog)}")
                    if s.warmup:
                        run_wrk(children, wrk, script, port, paths_file, s.warmup, s)
                    cpu0, busy0 = cpu_seconds(gw.pid), machine_busy()
                    data = run_wrk(children, wrk, script, port, paths_file, s.duration, s)
                    cpu1, busy1 = cpu_seconds(gw.pid), machine_busy()
                finally:
                    code = children.stop("gateway")
                if code not in (0, -signal.SIGTERM):
                    notes.append(f"{config} run {run + 1}: gateway exited with {code}")
                errors_logged = sum(
                    "Traceback" in line for line in glog.read_text(errors="replace").splitlines()
                )
                if errors_logged:
                    notes.append(f"{config} run {run + 1}: {errors_logged} tracebacks in its log")
                seconds = data["duration_us"] / 1e6
                n = int(data["requests"])
                r = E2EResult(
                    config=config,
                    run=run + 1,
                    requests=n,
                    rps=round(n / seconds, 1),
                    p50_ms=data["p50"] / 1e3,
                    p90_ms=data["p90"] / 1e3,
                    p99_ms=data["p99"] / 1e3,
                    max_ms=data["max"] / 1e3,
                    errors=int(data["errors"]),
                    non2xx=int(data["non2xx"]),
                    gateway_cpu_us_per_req=round((cpu1 - cpu0) * 1e6 / max(1, n), 1),
                    machine_busy_pct=round(
                        100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1
                    ),
                    idle_wait_s=waited,
                )
                if waited is None:
                    notes.append(f"{config} run {run + 1}: the machine was busy before it")
                results.append(r)
                print(
                    f"  {config:8} run {r.run}: {r.rps:8,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:6.2f} ms  cpu {r.gateway_cpu_us_per_req:6.1f} µs/req  "
                    f"errors {r.errors + r.non2xx}  machine {r.machine_busy_pct:.0f} %",
                    file=sys.stderr,
                    flush=True,
                )
    return results, notes


def e2e_summary(results: Sequence[E2EResult]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for config in E2E_CONFIGS:
        rs = [r for r in results if r.config == config]
        if not rs:
            continue
        out[config] = {
            "runs": len(rs),
            "rps": statistics.median(r.rps for r in rs),
            "rps_min": min(r.rps for r in rs),
            "rps_max": max(r.rps for r in rs),
            "p50_ms": statistics.median(r.p50_ms for r in rs),
            "p99_ms": statistics.median(r.p99_ms for r in rs),
            "cpu_us_per_req": statistics.median(r.gateway_cpu_us_per_req for r in rs),
            "errors": sum(r.errors + r.non2xx for r in rs),
        }
    return out


def e2e_table(summary: dict[str, dict[str, float]]) -> str:
    titles = {
        "stub": "selection bypassed (stub)",
        "ordered": "`mode: ordered` (plain pool)",
        "weighted": "`mode: weighted`",
    }
    base = summary.get("ordered", {}).get("rps")
    stub = summary.get("stub", {}).get("rps")
    lines = [
        "| configuration | req/s (median) | runs min-max | p50 ms | p99 ms | gateway CPU µs/req | "
        "loss vs ordered | loss vs stub | errors |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for config, v in summary.items():
        loss = f"{100 * (1 - v['rps'] / base):+.1f} %" if base else "-"
        loss_stub = f"{100 * (1 - v['rps'] / stub):+.1f} %" if stub else "-"
        lines.append(
            f"| {titles[config]} | {v['rps']:,.0f} | {v['rps_min']:,.0f}-{v['rps_max']:,.0f} | "
            f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['cpu_us_per_req']:.0f} | {loss} | "
            f"{loss_stub} | {v['errors']:.0f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations, short wrk runs")
    p.add_argument("--iterations", type=int, default=100_000, help="timed requests per cell")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile weighted mode, 8 candidates")
    p.add_argument("--duration", type=int, default=15, help="wrk seconds per run (15)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured wrk seconds first (3)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration (3)")
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
    if not 1 <= a.duration <= 300 or not 0 <= a.warmup <= 60 or not 1 <= a.repeat <= 20:
        p.error("--duration 1..300, --warmup 0..60, --repeat 1..20")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if not args.skip_micro:
        iterations = 10_000 if args.quick else args.iterations
        results = []
        for n in SIZES:
            for mode in MODES:
                if not args.quick and args.idle_wait and wait_for_idle(args.idle_wait) is None:
                    print("  (the machine is busy: micro numbers may be high)", file=sys.stderr)
                gc.collect()
                r = micro(n, mode, iterations, args.seed)
                results.append(r)
                print(f"  micro {n:2} {mode:8}: median {r.median_us:6.1f} µs", file=sys.stderr)
        print("## Selection cost per request (order + observe + served)\n")
        print(micro_table(results))
        doc["micro"] = [asdict(r) for r in results]
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
            repeat=1 if args.quick else args.repeat,
            modules=args.modules,
            sut_cpus=args.sut_cpus,
            load_cpus=args.load_cpus,
            idle_wait=0 if args.quick else args.idle_wait,
        )
        try:
            e2e_results, notes = e2e(s)
        except BenchError as exc:
            print(f"end-to-end benchmark failed: {exc}", file=sys.stderr)
            return 1
        summary = e2e_summary(e2e_results)
        print(
            f"\n## End to end: gateway on CPU {s.sut_cpus}, nginx + wrk on CPU {s.load_cpus}, "
            f"wrk -t1 -c{s.connections} -d{s.duration}s, {s.repeat} run(s) each, median\n"
        )
        print(e2e_table(summary))
        loss = 100 * (1 - summary["weighted"]["rps"] / summary["ordered"]["rps"])
        verdict = "met" if loss < LOSS_TARGET_PCT else "NOT met"
        print(f"\nweighted vs ordered: {loss:.1f} % fewer req/s (target: < 10 % loss, {verdict})")
        for note in notes:
            print(f"- {note}")
        doc["e2e"] = {
            "settings": asdict(s),
            "runs": [asdict(r) for r in e2e_results],
            "summary": summary,
            "notes": notes,
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1))
    print(f"json: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
