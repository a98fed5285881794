"""The context every scenario runs in: settings, the work folder, the children, the
shared upstream, and helpers that start a server and measure it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .fixture import Fixture, build_fixture, expected_type
from .load import Run, Wrk, process_tree, wait_for_idle
from .procs import HOST, BenchError, Children, free_port, http_get, wait_ready
from .report import fmt
from .servers import (
    Server,
    baseline_argv,
    gateway_argv,
    gateway_rules,
    nginx_argv,
    nginx_conf,
    python_env,
    static_body,
)


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    duration: float  # seconds per measured run
    warmup: float
    connections: int
    soak_seconds: float
    idle_wait: float
    sut_cpus: str | None  # None: no pinning
    load_cpus: str | None
    modules: int  # fixture modules with 1 KiB zips
    large_modules: int  # ... with 1 MiB zips


class Bench:
    def __init__(self, settings: Settings, work: Path, tools: dict[str, str]) -> None:
        self.s = settings
        self.work = work
        self.tools = tools
        self.children = Children(tools.get("taskset") if settings.sut_cpus else None)
        script = work / "rotate.lua"
        from .load import WRK_SCRIPT

        script.write_text(WRK_SCRIPT)
        self.wrk = Wrk(tools["wrk"], script, self.children, settings.load_cpus)
        self._fixture: Fixture | None = None
        self._upstream: Server | None = None

    # ------------------------------------------------------------------ the shared upstream

    def fixture(self) -> Fixture:
        if self._fixture is None:
            self._fixture = build_fixture(self.work / "tree", self.s.modules, self.s.large_modules)
        return self._fixture

    def upstream(self) -> Server:
        """nginx serving the fixture tree as static files, on the load CPUs."""
        if self._upstream is None:
            fx = self.fixture()
            port = free_port()
            self._upstream = self.nginx(
                "upstream",
                static_body(port, fx.root),
                port,
                cpus=self.s.load_cpus,
                probe=fx.paths["info"][0],
            )
        return self._upstream

    # ------------------------------------------------------------------ starting servers

    def _start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        cpus: str | None,
        probe: str,
        what: str,
        *,
        tls: bool = False,
        env: dict[str, str] | None = None,
    ) -> Server:
        log = self.work / f"{name}-stderr.log"
        proc = self.children.start(name, argv, cpus, log, env=env)
        wait_ready(proc, port, probe, log, what, tls=tls)
        return Server(name, port, proc.pid, log, tls)

    def nginx(
        self,
        name: str,
        body: str,
        port: int,
        *,
        cpus: str | None = None,
        probe: str = "/",
        tls: bool = False,
    ) -> Server:
        argv = nginx_argv(self.tools["nginx"], self.work, name, nginx_conf(self.work, name, body))
        return self._start(
            name, argv, port, cpus or self.s.sut_cpus, probe, f"nginx {name}", tls=tls
        )

    def gateway(
        self,
        name: str,
        extra: str = "",
        *,
        upstreams: dict[str, int] | None = None,
        workers: int = 1,
        tls: tuple[Path, Path] | None = None,
        cpus: str | None = "sut",
    ) -> Server:
        port = free_port()
        rules = self.work / f"{name}.yaml"
        rules.write_text(gateway_rules(upstreams or {"origin": self.upstream().port}, extra))
        argv = gateway_argv(rules, port, workers, tls)
        return self._start(
            name,
            argv,
            port,
            self.s.sut_cpus if cpus == "sut" else cpus,
            "/readyz",
            f"gateway {name}",
            tls=tls is not None,
            env=python_env(),
        )

    def baseline(self, kind: str, arg: str) -> Server:
        port = free_port()
        probe = "/readyz-none" if kind == "forward" else self.fixture().paths["info"][0]
        name = f"bare-{kind}"
        argv = baseline_argv(kind, port, arg)
        log = self.work / f"{name}-stderr.log"
        proc = self.children.start(name, argv, self.s.sut_cpus, log, env=python_env())
        if kind == "forward":  # any answer from the upstream (404 here) means it is up
            probe = self.fixture().paths["info"][0]
        wait_ready(proc, port, probe, log, f"bare aiohttp {kind}")
        return Server(name, port, proc.pid, log)

    def stop(self, server: Server) -> None:
        self.children.stop(server.name)

    @contextmanager
    def serving(self, server: Server) -> Iterator[Server]:
        try:
            yield server
        finally:
            self.stop(server)

    # ------------------------------------------------------------------ measuring

    def measure(
        self,
        server: Server,
        label: str,
        paths: Path,
        *,
        connections: int | None = None,
        rate: float | None = None,
        seconds: float | None = None,
        warmup: float | None = None,
        header: str = "",
    ) -> Run:
        wait_for_idle(self.s.idle_wait)
        others = (
            process_tree(self._upstream.pid)
            if self._upstream and self._upstream is not server
            else []
        )
        run = self.wrk.measure(
            label,
            server.port,
            paths,
            seconds=seconds or self.s.duration,
            warmup=self.s.warmup if warmup is None else warmup,
            connections=connections or self.s.connections,
            sut=process_tree(server.pid),
            others=others,
            rate=rate,
            header=header,
            tls=server.tls,
        )
        print(
            f"  {label:40} {run.rps:>9,.0f} req/s  p50 {run.p50_ms:6.2f}  p99 {run.p99_ms:7.2f} ms"
            f"  {run.mib_s:8.1f} MiB/s  errors {run.error_count}  other {run.other_load_pct}%",
            flush=True,
        )
        return run

    def check(
        self, server: Server, workload: str, sample: int = 10, header: dict[str, str] | None = None
    ) -> None:
        """GET a sample of a workload's paths; the bytes and type must be the tree's."""
        fx = self.fixture()
        for path in fx.paths[workload][:sample]:
            status, ctype, body = http_get(server.port, path, headers=header, tls=server.tls)
            if status != 200 or body != fx.expected(path):
                raise BenchError(
                    f"{server.name}: GET {path} gave {status}, {len(body)} bytes: {body[:200]!r}"
                )
            if ctype.split(";")[0].strip() != expected_type(path):
                raise BenchError(f"{server.name}: GET {path}: Content-Type {ctype!r}")

    def warm(self, server: Server, workload: str) -> None:
        for path in self.fixture().paths[workload]:
            status, _, body = http_get(server.port, path, tls=server.tls)
            if status != 200:
                raise BenchError(f"{server.name}: warming GET {path} gave {status}: {body[:200]!r}")


RUN_COLUMNS = [
    "target",
    "req/s",
    "MiB/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
    "SUT CPU µs/req",
    "other load %",
]


def run_row(r: Run) -> list[str]:
    errors = ", ".join(f"{k} {v}" for k, v in r.errors.items() if v) or "0"
    cpu = fmt(r.sut_cpu_us_per_req, 0)
    return [
        r.target,
        fmt(r.rps, 0),
        fmt(r.mib_s, 1),
        fmt(r.p50_ms),
        fmt(r.p99_ms),
        fmt(r.p999_ms),
        errors,
        cpu,
        f"{r.other_load_pct:.0f}" + (" (!)" if r.noisy else ""),
    ]


def run_data(r: Run) -> dict[str, object]:
    """A run's numbers for the JSON report (without wrk's raw output)."""
    return {k: getattr(r, k) for k in Run.__slots__ if k != "raw"}


def rps(r: Run | None) -> float | None:
    """A run's req/s, or None when it had errors (a ratio to it would mean nothing)."""
    return None if r is None or r.error_count else r.rps


__all__ = ["HOST", "RUN_COLUMNS", "Bench", "Settings", "rps", "run_data", "run_row"]
