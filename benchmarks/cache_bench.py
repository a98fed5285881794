"""Cache and limiter benchmarks, side by side with nginx, on loopback.

    python benchmarks/cache_bench.py [--duration 8] [--connections 32]

1. cached metadata hits: goproxy-router (memory cache, warm) vs nginx
   `proxy_cache` (warm) in front of the same upstream; target >= 0.5x req/s.
2. 1 MiB zips from the artifact store (sendfile) vs nginx serving the same
   files as static files; target >= 0.8x MB/s.
3. rate limiting on (limits that never trigger) vs off, on cached hits;
   target < 5 % loss.

The system under test runs on CPU 0 (`taskset -c 0`), the upstream nginx and
wrk on CPU 1. Everything listens on 127.0.0.1 and every child is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port  # noqa: E402 - one copy, shared with the pass-through harness

GATEWAY = [sys.executable, "-m", "router", "serve"]


def build_tree(root: Path, modules: int = 200, zips: int = 16) -> tuple[list[str], list[str]]:
    """A GOPROXY tree: metadata paths and 1 MiB zip paths."""
    rng = random.Random(7)
    meta: list[str] = []
    zip_paths: list[str] = []
    for i in range(modules):
        mod = f"example.com/bench/m{i}"
        vdir = root / mod / "@v"
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "list").write_text("v1.0.0\n")
        (vdir / "v1.0.0.info").write_text('{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}')
        (vdir / "v1.0.0.mod").write_text(f"module {mod}\n\ngo 1.21\n")
        meta += [f"/{mod}/@v/list", f"/{mod}/@v/v1.0.0.info", f"/{mod}/@v/v1.0.0.mod"]
        if i < zips:
            with zipfile.ZipFile(vdir / "v1.0.0.zip", "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(f"{mod}@v1.0.0/go.mod", f"module {mod}\n")
                zf.writestr(f"{mod}@v1.0.0/data.bin", rng.randbytes(1 << 20))
            zip_paths.append(f"/{mod}/@v/v1.0.0.zip")
    return meta, zip_paths


NGINX_BASE = """{user}worker_processes 1; daemon off; pid {w}/{n}.pid; error_log {w}/{n}.err;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {w}/{n}-b; proxy_temp_path {w}/{n}-p; fastcgi_temp_path {w}/{n}-f;
  uwsgi_temp_path {w}/{n}-u; scgi_temp_path {w}/{n}-s;
  types {{ application/json info; text/plain mod; application/zip zip; }}
  default_type text/plain;
  {body}
}}
"""


def nginx_conf(work: Path, name: str, body: str) -> Path:
    path = work / f"{name}.conf"
    user = "user root; " if os.geteuid() == 0 else ""  # workers must read the temp folder
    path.write_text(NGINX_BASE.format(user=user, w=work, n=name, body=body))
    return path


@contextmanager
def started(
    cmd: list[str], cpu: int, log: Path, ready_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while ready_url and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status < 500:
                        break
            except OSError:
                time.sleep(0.1)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def warm(port: int, paths: list[str]) -> None:
    for p in paths:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=10) as r:
            r.read()


LUA = """
local paths = {{{paths}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON{{\\"requests\\":%d,\\"bytes\\":%d,\\"seconds\\":%f,"
    .. "\\"errors\\":%d,\\"p50\\":%f,\\"p99\\":%f}}\\n",
    summary.requests, summary.bytes, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk(work: Path, port: int, paths: list[str], args: argparse.Namespace) -> dict[str, float]:
    script = work / f"wrk-{port}.lua"
    script.write_text(LUA.format(paths=",".join(json.dumps(p) for p in paths)))
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=args.duration + 30,
        check=True,
    ).stdout
    data: dict[str, float] = json.loads(re.search(r"JSON(\{.*\})", out).group(1))  # type: ignore[union-attr]
    data["rps"] = data["requests"] / data["seconds"]
    data["mbps"] = data["bytes"] / data["seconds"] / (1 << 20)
    return data


def rules(work: Path, name: str, upstream: int, extra: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        f"upstreams: [{{name: origin, url: 'http://127.0.0.1:{upstream}'}}]\n"
        "pools: {main: {upstreams: [origin]}}\n"
        "default: {pool: main}\n"
        "logging: {access: false}\n"
        "selection: {probe_interval: 1h}\n" + extra
    )
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install -y nginx wrk", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="goproxy-cache-bench-"))
    rows: list[tuple[str, str, dict[str, float]]] = []
    try:
        tree = work / "tree"
        meta, zips = build_tree(tree)
        up_port, px_port, st_port = free_port(), free_port(), free_port()
        up = nginx_conf(work, "upstream", f"server {{ listen 127.0.0.1:{up_port}; root {tree}; }}")
        px = nginx_conf(
            work,
            "proxycache",
            (
                f"proxy_cache_path {work}/pc levels=1:2 keys_zone=gp:50m max_size=1g inactive=1h;"
                f"upstream origin {{ server 127.0.0.1:{up_port}; keepalive 64; }}"
                f"server {{ listen 127.0.0.1:{px_port}; location / {{ proxy_pass http://origin;"
                ' proxy_http_version 1.1; proxy_set_header Connection ""; proxy_cache gp;'
                " proxy_cache_valid 200 1h; } }"
            ),
        )
        st = nginx_conf(work, "static", f"server {{ listen 127.0.0.1:{st_port}; root {tree}; }}")
        with started(
            ["nginx", "-c", str(up)], 1, work / "up.log", f"http://127.0.0.1:{up_port}{meta[0]}"
        ):
            with started(
                ["nginx", "-c", str(px)], 0, work / "px.log", f"http://127.0.0.1:{px_port}{meta[0]}"
            ):
                warm(px_port, meta)
                rows.append(
                    ("cached metadata hits", "nginx proxy_cache", wrk(work, px_port, meta, args))
                )
            for label, extra in (
                ("goproxy-router (memory cache)", "cache: {memory: 256MiB}\n"),
                (
                    "goproxy-router (memory cache, limits on)",
                    "cache: {memory: 256MiB}\n"
                    "limits: {anonymous: {rate: 1000000/s, burst: 1000000}}\n",
                ),
            ):
                port = free_port()
                cmd = [
                    *GATEWAY,
                    "--rules",
                    str(rules(work, "gw", up_port, extra)),
                    "--listen",
                    f"127.0.0.1:{port}",
                ]
                with started(cmd, 0, work / "gw.log", f"http://127.0.0.1:{port}/readyz"):
                    warm(port, meta)
                    rows.append(("cached metadata hits", label, wrk(work, port, meta, args)))
            with started(
                ["nginx", "-c", str(st)], 0, work / "st.log", f"http://127.0.0.1:{st_port}{zips[0]}"
            ):
                rows.append(("1 MiB zips", "nginx static files", wrk(work, st_port, zips, args)))
            port = free_port()
            extra = f"cache: {{memory: 0, dir: '{work}/store'}}\n"
            cmd = [
                *GATEWAY,
                "--rules",
                str(rules(work, "store", up_port, extra)),
                "--listen",
                f"127.0.0.1:{port}",
            ]
            with started(cmd, 0, work / "store.log", f"http://127.0.0.1:{port}/readyz"):
                warm(port, zips)
                time.sleep(1)
                rows.append(
                    ("1 MiB zips", "goproxy-router (artifact store)", wrk(work, port, zips, args))
                )
    finally:
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)
    print(render(rows))
    return 0


def render(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    lines = [
        "| workload | target | req/s | MiB/s | p50 ms | p99 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for workload, target, d in rows:
        lines.append(
            f"| {workload} | {target} | {d['rps']:,.0f} | {d['mbps']:,.1f} | {d['p50']:.2f} | "
            f"{d['p99']:.2f} | {d['errors']:.0f} |"
        )
    by = {t: d for _, t, d in rows}
    hits = by["goproxy-router (memory cache)"]["rps"] / by["nginx proxy_cache"]["rps"]
    store = by["goproxy-router (artifact store)"]["mbps"] / by["nginx static files"]["mbps"]
    limits = (
        1
        - by["goproxy-router (memory cache, limits on)"]["rps"]
        / by["goproxy-router (memory cache)"]["rps"]
    )
    lines += [
        "",
        "| ratio | value | target |",
        "|---|--:|---|",
        f"| cached hits: gateway / nginx proxy_cache (req/s) | {hits:.2f} | >= 0.5 |",
        f"| zips: artifact store / nginx static (MiB/s) | {store:.2f} | >= 0.8 |",
        f"| rate limiting on vs off: throughput loss | {limits * 100:.1f} % | < 5 % |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
