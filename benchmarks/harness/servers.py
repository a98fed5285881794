"""The servers scenarios compare: nginx (static, proxy_pass, proxy_cache, TLS), the
gateway (`python -m router serve`, this checkout's code), and the bare aiohttp
baselines (`baselines.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .procs import HOST, REPO, BenchError

INFO_TYPES = """  types {
    application/json info;
    text/plain mod;
    application/zip zip;
  }
  default_type text/plain;  # the extension-less @v/list
"""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    port: int
    pid: int
    log: Path
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"


def nginx_conf(work: Path, name: str, body: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp folders
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
  sendfile on;
  tcp_nopush on;
{INFO_TYPES}{body}
}}
"""


def static_body(port: int, tree: Path, tls: tuple[Path, Path] | None = None) -> str:
    listen = f"{HOST}:{port}" + (" ssl" if tls else "")
    certs = f"    ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n" if tls else ""
    return f"""  server {{
    listen {listen};
{certs}    root {tree};
    location / {{ try_files $uri =404; }}
  }}"""


def proxy_body(work: Path, name: str, port: int, upstream_port: int, cache: bool) -> str:
    zone = (
        f"  proxy_cache_path {work / (name + '-cache')} levels=1:2 keys_zone={name}:50m "
        "max_size=2g inactive=1h use_temp_path=off;\n"
        if cache
        else ""
    )
    caching = f"      proxy_cache {name};\n      proxy_cache_valid 200 1h;\n" if cache else ""
    return f"""{zone}  upstream origin {{
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
{caching}    }}
  }}"""


def nginx_argv(nginx: str, work: Path, name: str, conf: str) -> list[str]:
    """Write and check `conf`; the argv that runs it in the foreground."""
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
    return [nginx, "-p", str(work), "-e", str(log), "-c", str(conf_path)]


def gateway_rules(upstreams: dict[str, int], extra: str = "", access_log: bool = False) -> str:
    """One pool over the given loopback upstreams (name -> port); `extra` is appended YAML."""
    ups = "\n".join(f'  - {{name: {n}, url: "http://{HOST}:{p}"}}' for n, p in upstreams.items())
    rules = f"""version: 1
upstreams:
{ups}
pools:
  main: {{upstreams: [{", ".join(upstreams)}], fallback: not-found}}
default: {{pool: main}}
"""
    if "selection:" not in extra:
        rules += "selection: {probe_interval: 1h}\n"
    if not access_log:
        rules += "logging: {access: false}\n"
    return rules + extra


def gateway_argv(
    rules: Path, port: int, workers: int = 1, tls: tuple[Path, Path] | None = None
) -> list[str]:
    argv = [sys.executable, "-m", "router", "serve", "--rules", str(rules)]
    argv += ["--listen", f"{HOST}:{port}"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    if tls:
        argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    return argv


def python_env() -> dict[str, str]:
    """This checkout's code first, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def baseline_argv(kind: str, port: int, arg: str) -> list[str]:
    """The bare aiohttp + uvloop forwarder (`forward`, arg: upstream URL) or dict-cache
    server (`dict`, arg: the tree to load)."""
    return [sys.executable, "-m", "benchmarks.harness.baselines", kind, str(port), arg]


def self_signed(work: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (trustme, from the test extra)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    cert_path, key_path = work / "tls-cert.pem", work / "tls-key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    return cert_path, key_path
