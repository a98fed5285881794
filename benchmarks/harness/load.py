"""Load generation (wrk, pinned to the load CPUs) and CPU, memory and FD accounting."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import HOST, BenchError, Children

IDLE_LIMIT_PCT = 10.0  # machine-wide busy CPU (% of one core) that still counts as quiet
IDLE_WINDOW_SECONDS = 3  # ... for this many seconds in a row before a run
NOISY_PCT = 10.0  # other processes' load during a run above which the run is flagged

# One Lua state per wrk thread: rotate over a paths file; args[2] > 0 paces each
# connection (mean delay in ms between its requests: a fixed offered rate); args[3]
# is an optional "Name: value" header. done() prints exact numbers as one JSON line.
WRK_SCRIPT = r"""
local paths, counter, threads = {}, 0, 0
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
  local pace = tonumber(args[2] or "0") or 0
  if pace > 0 then
    math.randomseed(counter + 1)
    -- whole milliseconds, rounded: the mean delay is the pace asked for
    delay = function() return math.floor(pace * (0.5 + math.random()) + 0.5) end
  end
  if args[3] and #args[3] > 0 then
    local name, value = args[3]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
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
    '"latency_us":{"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass(slots=True)
class Run:
    """One measured wrk run against one target."""

    target: str
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
    sut_cpu_us_per_req: float | None
    other_load_pct: float  # CPU (% of one core) used by processes we did not start
    offered_rps: float | None = None  # paced runs: the rate asked for
    raw: str = field(default="", repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def noisy(self) -> bool:
        return self.other_load_pct > NOISY_PCT


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


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx master -> worker, gateway -> its workers)."""
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


def open_fds(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_wait: float) -> float | None:
    """Wait until the machine has been quiet for IDLE_WINDOW_SECONDS in a row; the seconds
    waited, or None when it was still busy after `max_wait` (0: do not wait)."""
    if max_wait <= 0:
        return 0.0
    started = time.monotonic()
    quiet = 0
    while quiet < IDLE_WINDOW_SECONDS:
        if time.monotonic() - started >= max_wait:
            return None
        before = cpu_ticks()
        time.sleep(1.0)
        busy = sum(b - before[c][0] for c, (b, _) in cpu_ticks().items())
        quiet = quiet + 1 if 100.0 * busy / os.sysconf("SC_CLK_TCK") < IDLE_LIMIT_PCT else 0
    return round(time.monotonic() - started, 1)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """CPU counters at one instant, to diff around a measured run."""

    at: float
    cpus: dict[str, tuple[int, int]]
    sut: float  # CPU seconds of the system under test
    ours: float  # ... of everything we started that is watched, plus reaped children

    @classmethod
    def take(cls, sut: Sequence[int], others: Sequence[int]) -> Snapshot:
        own = sorted(set(sut) | set(others))
        return cls(
            time.monotonic(),
            cpu_ticks(),
            cpu_seconds(sut),
            cpu_seconds(own) + children_cpu_seconds(),
        )

    def other_load_pct(self, later: Snapshot) -> float:
        busy = sum(b - self.cpus[c][0] for c, (b, _) in later.cpus.items())
        other = busy / os.sysconf("SC_CLK_TCK") - (later.ours - self.ours)
        return round(max(0.0, 100.0 * other / max(1e-6, later.at - self.at)), 1)


@dataclass(frozen=True, slots=True)
class Wrk:
    binary: str
    script: Path
    children: Children
    load_cpus: str | None
    threads: int = 1
    timeout_s: int = 10

    def raw(
        self,
        port: int,
        paths_file: Path,
        seconds: float,
        connections: int,
        *,
        pace_ms: float = 0.0,
        header: str = "",
        tls: bool = False,
    ) -> tuple[dict[str, Any], str]:
        scheme = "https" if tls else "http"
        argv = self.children.argv(
            [
                self.binary,
                f"-t{min(self.threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={self.timeout_s}s",
                "-s",
                str(self.script),
                f"{scheme}://{HOST}:{port}",
                "--",
                str(paths_file),
                f"{pace_ms:.0f}",
                header,
            ],
            self.load_cpus,
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        out = done.stdout + done.stderr
        for line in out.splitlines():
            if line.startswith("WRK_JSON "):
                return json.loads(line.removeprefix("WRK_JSON ")), out
        raise BenchError(f"wrk gave no result (exit {done.returncode}):\n{out[-2000:]}")

    def measure(
        self,
        target: str,
        port: int,
        paths_file: Path,
        *,
        seconds: float,
        warmup: float,
        connections: int,
        sut: Sequence[int],
        others: Sequence[int] = (),
        rate: float | None = None,
        header: str = "",
        tls: bool = False,
    ) -> Run:
        """A warm-up, then one measured run; `rate` paces it (requests/s over all
        connections) instead of running closed-loop flat out."""
        pace_ms = 1000.0 * connections / rate if rate else 0.0
        if warmup:
            self.raw(port, paths_file, warmup, connections, pace_ms=pace_ms, header=header, tls=tls)
        before = Snapshot.take(sut, others)
        data, raw = self.raw(
            port, paths_file, seconds, connections, pace_ms=pace_ms, header=header, tls=tls
        )
        after = Snapshot.take(sut, others)
        secs = data["duration_us"] / 1e6
        lat = data["latency_us"]
        n = int(data["requests"])
        return Run(
            target=target,
            requests=n,
            seconds=round(secs, 3),
            rps=round(n / secs, 1),
            mib_s=round(data["bytes"] / secs / (1 << 20), 2),
            p50_ms=lat["p50"] / 1000,
            p90_ms=lat["p90"] / 1000,
            p99_ms=lat["p99"] / 1000,
            p999_ms=lat["p999"] / 1000,
            max_ms=lat["max"] / 1000,
            errors={k: int(v) for k, v in data["errors"].items()},
            sut_cpu_us_per_req=round((after.sut - before.sut) * 1e6 / n, 1) if n else None,
            other_load_pct=before.other_load_pct(after),
            offered_rps=rate,
            raw=raw,
        )
