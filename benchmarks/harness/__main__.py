"""Run every benchmark scenario (or --only some) and write one report.

    python -m benchmarks.harness                    # full run (make bench)
    python -m benchmarks.harness --quick            # smoke run of every scenario, ~1 min
    python -m benchmarks.harness --only realclient,passthrough --duration 20

Results: benchmarks/out/bench-<UTC stamp>.{md,json} (or --out).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .bench import Bench, Settings
from .procs import BenchError, cpu_list, find_tool, require_tools, stop_signals_interrupt
from .report import Report, Section, environment, render, save, source_state
from .scenarios import SCENARIOS

BENCH_DIR = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: short runs, small fixtures, no idle wait"
    )
    p.add_argument("--only", default="", help="comma list of scenarios: " + ", ".join(SCENARIOS))
    p.add_argument(
        "--duration", type=float, default=10, help="seconds per measured run (10; quick 1)"
    )
    p.add_argument(
        "--warmup", type=float, default=2, help="unmeasured seconds before each (2; quick 0)"
    )
    p.add_argument("--connections", type=int, default=32, help="wrk -c for saturating runs (32)")
    p.add_argument("--soak-seconds", type=float, help="length of the soak (600; quick 4)")
    p.add_argument(
        "--idle-wait",
        type=float,
        default=60,
        help="wait up to N s for a quiet machine before each run (60; quick 0)",
    )
    p.add_argument("--sut-cpus", default="0", help="taskset -c list for the system under test (0)")
    p.add_argument("--load-cpus", default="1", help="taskset -c list for upstreams and wrk (1)")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument(
        "--out", type=Path, default=BENCH_DIR / "out", help="report folder (benchmarks/out)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, logs)")
    a = p.parse_args(argv)
    only = [n for n in a.only.split(",") if n]
    if bad := [n for n in only if n not in SCENARIOS]:
        p.error(f"unknown scenario(s): {', '.join(bad)}; known: {', '.join(SCENARIOS)}")
    if not a.no_pin:
        try:
            for spec in (a.sut_cpus, a.load_cpus):
                if not cpu_list(spec) <= os.sched_getaffinity(0):
                    p.error(
                        f"CPUs {spec} are not available here; "
                        "pass --sut-cpus/--load-cpus or --no-pin"
                    )
        except ValueError:
            p.error("--sut-cpus/--load-cpus take taskset -c lists such as 0 or 0,2 or 1-3")
    if a.duration <= 0 or a.warmup < 0 or a.connections < 1:
        p.error("need --duration > 0, --warmup >= 0, --connections >= 1")
    settings = Settings(
        quick=a.quick,
        duration=1 if a.quick else a.duration,
        warmup=0 if a.quick else a.warmup,
        connections=8 if a.quick else a.connections,
        soak_seconds=a.soak_seconds if a.soak_seconds is not None else (2 if a.quick else 600),
        idle_wait=0 if a.quick else a.idle_wait,
        sut_cpus=None if a.no_pin else a.sut_cpus,
        load_cpus=None if a.no_pin else a.load_cpus,
        modules=40 if a.quick else 300,
        large_modules=4 if a.quick else 16,
    )
    a.only = only or list(SCENARIOS)
    return settings, a


def main(argv: Sequence[str] | None = None) -> int:
    settings, a = parse_args(argv)
    command = shlex.join(
        ["python", "-m", "benchmarks.harness", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        tools = require_tools(["nginx", "wrk", *([] if a.no_pin else ["taskset"])])
    except BenchError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    if go := find_tool("go"):
        tools["go"] = go
    pinning = (
        "none"
        if a.no_pin
        else f"system under test on CPU {a.sut_cpus}, upstreams and wrk on CPU {a.load_cpus}"
    )
    report = Report(
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=command,
        source=source_state(),
        environment=environment(tools),
        settings={"pinning": pinning, **{k: getattr(settings, k) for k in Settings.__slots__}},
    )
    work = Path(tempfile.mkdtemp(prefix="goproxy-bench-"))
    bench = Bench(settings, work, tools)
    failed = 0
    try:
        with stop_signals_interrupt():
            for name in a.only:
                module = SCENARIOS[name]
                print(f"\n== {name}: {module.TITLE}", flush=True)
                started = time.monotonic()
                try:
                    section = module.run(bench)
                except BenchError as exc:
                    section = Section(
                        name, module.TITLE, status=f"failed: {str(exc).splitlines()[0]}"
                    )
                    section.notes.append(str(exc)[-3000:])
                except Exception as exc:  # one broken scenario must not lose the others
                    traceback.print_exc()
                    section = Section(
                        name, module.TITLE, status=f"failed: {type(exc).__name__}: {exc}"
                    )
                finally:
                    bench.children.stop_all(keep=["upstream"])
                section.seconds = round(time.monotonic() - started, 1)
                failed += section.status != "ok"
                report.sections.append(section)
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted; all child processes stopped", file=sys.stderr)
        return 130
    finally:
        bench.children.stop_all()
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    md, js = save(report, a.out)
    print("\n" + render(report))
    print(f"written: {md} and {js}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
