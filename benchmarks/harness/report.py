"""One report per run: markdown and JSON, with the commit, the command, and every
scenario's table and ratios to the baselines measured in the same run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .procs import REPO


@dataclass(slots=True)
class Ratio:
    name: str
    value: float | None  # None: a side is missing (errors, or not measured)
    target: str = ""  # e.g. "<= 1.05"; empty: reported only
    met: bool | None = None

    @classmethod
    def of(
        cls,
        name: str,
        num: float | None,
        den: float | None,
        *,
        at_most: float | None = None,
        at_least: float | None = None,
    ) -> Ratio:
        value = round(num / den, 3) if num is not None and den else None
        if at_most is not None:
            return cls(name, value, f"<= {at_most:g}", None if value is None else value <= at_most)
        if at_least is not None:
            return cls(
                name, value, f">= {at_least:g}", None if value is None else value >= at_least
            )
        return cls(name, value)


@dataclass(slots=True)
class Section:
    name: str
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers, JSON only
    status: str = "ok"  # or "failed: why"
    seconds: float = 0.0


@dataclass(slots=True)
class Report:
    started: str
    command: str
    source: str
    environment: dict[str, Any]
    settings: dict[str, Any]
    sections: list[Section] = field(default_factory=list)


def source_state() -> str:
    """The commit the gateway runs from, and whether router/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "router"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    state = f"commit {head.stdout.strip()}"
    if changed := len(dirty.stdout.splitlines()):
        state += f" + {changed} changed file(s) in router/"
    return state


def environment(tools: dict[str, str]) -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "unknown"

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
    }
    env.update(
        {
            name: first_line([path, "-v" if name != "go" else "version"])
            for name, path in tools.items()
            if name in ("nginx", "wrk", "go")
        }
    )
    return env


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(r: Ratio) -> str:
    if not r.target:
        return ""
    return {True: "met", False: "**not met**", None: "n/a"}[r.met]


def render(report: Report) -> str:
    env = report.environment
    lines = [
        f"# goproxy-router benchmarks, {report.started}",
        "",
        f"- source: {report.source}",
        f"- command: `{report.command}`",
        f"- machine: nproc {env['nproc']} ({env['cpu_model']}), kernel {env['kernel']}; "
        f"Python {env['python']}, aiohttp {env['aiohttp']}, uvloop {env['uvloop']}; "
        + "; ".join(str(env[k]) for k in ("nginx", "wrk", "go") if k in env),
        f"- pinning: {report.settings['pinning']}",
        "",
        "## Ratios (each against its baseline in this run)",
        "",
        "| scenario | ratio | value | target | |",
        "|---|---|--:|---|---|",
    ]
    for s in report.sections:
        if s.status != "ok":
            lines.append(f"| {s.name} | {s.status} | | | |")
        for r in s.ratios:
            lines.append(f"| {s.name} | {r.name} | {fmt(r.value)} | {r.target} | {verdict(r)} |")
    for s in report.sections:
        lines += ["", f"## {s.title} (`{s.name}`, {s.seconds:.0f} s)", ""]
        if s.status != "ok":
            lines += [f"**{s.status}**", ""]
        if s.columns and s.rows:
            lines.append("| " + " | ".join(s.columns) + " |")
            lines.append(
                "|" + "|".join("---" if i == 0 else "--:" for i in range(len(s.columns))) + "|"
            )
            lines += ["| " + " | ".join(row) + " |" for row in s.rows]
        if s.notes:
            lines += ["", *[f"- {n}" for n in s.notes]]
    return "\n".join(lines) + "\n"


def save(report: Report, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    md, js = out_dir / f"bench-{stamp}.md", out_dir / f"bench-{stamp}.json"
    md.write_text(render(report))
    js.write_text(json.dumps(asdict(report), indent=1) + "\n")
    return md, js
