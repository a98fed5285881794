"""Child processes, external tools and plain HTTP: every scenario's plumbing."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 30.0
INSTALL_HINT = "bash scripts/system-deps.sh (apt-get install -y nginx wrk)"


class BenchError(Exception):
    """A problem that stops the benchmark with a clear message (no traceback)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def find_tool(name: str) -> str | None:
    """`which`, also looking in the sbin folders a non-root PATH often lacks."""
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def require_tools(names: Sequence[str]) -> dict[str, str]:
    found = {name: find_tool(name) for name in names}
    if missing := [name for name, where in found.items() if where is None]:
        raise BenchError(f"missing: {', '.join(missing)}. Install with: {INSTALL_HINT}")
    return {name: where for name, where in found.items() if where is not None}


def cpu_list(spec: str) -> set[int]:
    """Parse a taskset -c list such as '0', '0,2' or '1-3'."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Children:
    """Every process the benchmark starts; `stop_all` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, taskset: str | None) -> None:
        self.taskset = taskset  # None: no pinning
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, argv: Sequence[str], cpus: str | None) -> list[str]:
        if self.taskset and cpus:
            return [self.taskset, "-c", cpus, *argv]
        return list(argv)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpus: str | None,
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        if name in self.procs:
            raise BenchError(f"internal: a child named {name} is already running")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
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
        # The child leads its own process group: this also ends workers it left behind.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()

    def stop_all(self, keep: Sequence[str] = ()) -> None:
        for name in reversed(list(self.procs)):
            if name not in keep:
                self.stop(name)


def http_get(
    port: int,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    tls: bool = False,
) -> tuple[int, str, bytes]:
    conn: http.client.HTTPConnection
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, path: str, log: Path, what: str, tls: bool = False
) -> float:
    """Poll GET `path` until 200; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        with suppress(OSError):
            if http_get(port, path, timeout=1.0, tls=tls)[0] == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise BenchError(f"{what} not ready within {READY_TIMEOUT_SECONDS:g}s:\n{tail(log)}")


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
