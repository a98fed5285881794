"""The benchmark harness's smoke run: `--quick` runs every scenario and writes one report.

It asserts that each scenario ran (status ok, its ratios present), never its numbers:
the machine's speed is not under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(
    not (_tool("nginx") and _tool("wrk")),
    reason="needs nginx and wrk: bash scripts/system-deps.sh",
)
def test_quick_run_writes_one_report_with_every_scenario(tmp_path: Path) -> None:
    pin = [] if len(os.sched_getaffinity(0)) >= 2 and _tool("taskset") else ["--no-pin"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", "--quick", *pin, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = sorted(tmp_path.glob("bench-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    report = json.loads(reports[0].read_text())
    assert "--quick" in report["command"] and report["source"]
    ran = {s["name"]: s for s in report["sections"]}
    assert list(ran) == list(SCENARIOS)
    for name, section in ran.items():
        assert section["status"] == "ok", (name, section["status"])
        assert section["ratios"], name
    markdown = reports[0].with_suffix(".md").read_text()
    assert all(f"`{name}`" in markdown for name in SCENARIOS)
