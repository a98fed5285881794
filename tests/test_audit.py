"""`goproxy-router audit` end to end: real fixture modules with real licence texts behind
a real GOPROXY server, a generated vulnerability database, a real gateway on loopback, the
installed command in its own process."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.gateway import gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, gosum_lines, hash_mod
from support.goproxy_server import FixtureProxy
from support.licensed import licensed_module
from support.vulndb import Vuln, write_vulndb

from router.cli import main
from router.core.requirements import (
    Requirement,
    parse_go_list,
    parse_go_mod,
    parse_go_sum,
    parse_requirements,
)

OLD = datetime(2024, 1, 1, tzinfo=UTC)
GOOD = licensed_module("example.com/good", "v1.0.0", {"LICENSE": "MIT"}, time=OLD)
GPL = licensed_module("example.com/gpl", "v1.4.0", {"COPYING": "GPL-3.0-only"}, time=OLD)
DUAL = licensed_module(
    "example.com/dual", "v0.3.0", {"LICENSE-MIT": "MIT", "LICENSE-APACHE": "Apache-2.0"}, time=OLD
)
VULN = licensed_module("example.com/vuln", "v1.2.3", {"LICENSE": "BSD-3-Clause"}, time=OLD)
YOUNG = licensed_module(
    "example.com/young", "v0.9.0", {"LICENSE": "ISC"}, time=datetime.now(UTC) - timedelta(days=1)
)
MODONLY = licensed_module("example.com/modonly", "v1.0.0", {"COPYING": "AGPL-3.0-only"}, time=OLD)
ALL = [GOOD, GPL, DUAL, VULN, YOUNG, MODONLY]
GPL_LINE = (
    "example.com/gpl@v1.4.0: refused by the policy of tenant finance: "
    "licence GPL-3.0-only is not allowed"
)


def _go_sum(path: Path, *modules: object) -> Path:
    lines: list[str] = []
    for m in modules:
        lines += gosum_lines(m)  # type: ignore[arg-type]
    lines.append(f"{MODONLY.path} {MODONLY.version}/go.mod {hash_mod(MODONLY.mod)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _rules(tmp_path: Path, url: str) -> Path:
    write_vulndb(tmp_path / "vulndb", [Vuln("GO-2024-1234", VULN.path, (("0", "1.2.4"),))])
    policy = {
        "licenses": {"allow": ["MIT", "Apache-2.0", "BSD-3-Clause", "ISC"]},
        "min_age": "7d",
        "vulnerabilities": {"db": str(tmp_path / "vulndb")},
    }
    tenants = [{"id": "finance", "policy": policy}, {"id": "open"}]
    return one_pool_rules(tmp_path / "rules.yaml", {"fixtures": url}, tenants=tenants)


def test_inputs_in_every_form() -> None:
    go_mod = (
        "module example.com/app\n\ngo 1.22\n\nrequire example.com/a v1.0.0 // indirect\n"
        "require (\n\texample.com/b v0.2.0\n\t// a comment\n\texample.com/c v1.1.0 // indirect\n)\n"
        "replace example.com/x => ../x\nexclude (\n\texample.com/d v1.0.0\n)\n"
    )
    assert parse_go_mod(go_mod) == [
        Requirement("example.com/a", "v1.0.0"),
        Requirement("example.com/b", "v0.2.0"),
        Requirement("example.com/c", "v1.1.0"),
    ]
    listed = (
        "example.com/app\nexample.com/a v1.0.0\nexample.com/b v0.2.0 => example.com/fork v0.2.1\n"
        "example.com/c v1.1.0 => ../c\n"
    )
    assert parse_go_list(listed) == [
        Requirement("example.com/a", "v1.0.0"),
        Requirement("example.com/fork", "v0.2.1"),
    ]
    go_sum = "\n".join([*gosum_lines(GOOD), f"x.example/y v1.0.0/go.mod {hash_mod(GOOD.mod)}"])
    assert parse_go_sum(go_sum) == [
        Requirement("example.com/good", "v1.0.0"),
        Requirement("x.example/y", "v1.0.0", gomod_only=True),
    ]
    assert parse_requirements(go_sum, "-") == parse_go_sum(go_sum)  # told apart by content
    assert parse_requirements(go_mod, "-") == parse_go_mod(go_mod)
    assert parse_requirements(listed, "-") == parse_go_list(listed)


async def _audit_process(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_audit_through_a_gateway_refuses_with_the_reason(tmp_path: Path) -> None:
    async with FixtureProxy(ModuleSet(ALL), name="fixtures") as proxy:
        rules = _rules(tmp_path, proxy.url)
        go_sum = _go_sum(tmp_path / "go.sum", GOOD, GPL, DUAL, VULN, YOUNG)
        async with gateway_in_process(rules) as gw:
            base = ("--rules", str(rules), "--tenant", "finance", "--gateway", gw.url)
            code, out, err = await _audit_process(*base, str(go_sum))
            assert code == 1, err
            assert GPL_LINE in out.splitlines()
            assert (
                "example.com/vuln@v1.2.3: refused by the policy of tenant finance: "
                "GO-2024-1234 affects v1.2.3, fixed in v1.2.4"
            ) in out
            assert (
                "example.com/young@v0.9.0: refused by the policy of tenant finance: v0.9.0 is"
                in out
            )
            assert out.splitlines()[-1] == (
                "3 of 6 module version(s) refused by the policy of tenant finance"
            )
            assert err == ""  # no progress bar when stderr is not a terminal
            rows = {line.split()[0]: line for line in out.splitlines()[1:7]}
            assert rows["example.com/dual"].split()[2:4] == ["Apache-2.0,", "MIT"]
            assert "(go.mod only)" in rows["example.com/modonly"]  # AGPL, but never unpacked
            code, out, _ = await _audit_process(*base, "--json", str(go_sum))
            doc = json.loads(out)
            assert code == 1 and doc["refused"] == 3
            by_module = {m["module"]: m for m in doc["modules"]}
            # the gateway enforces the same policy: it refused the zip, and its refusal
            # (rule and line) is the verdict; the licence ids stay in that line
            assert by_module["example.com/gpl"]["rule"] == "licence"
            assert "GPL-3.0-only" in by_module["example.com/gpl"]["message"]
            assert by_module["example.com/vuln"]["vulnerabilities"] == ["GO-2024-1234"]
            assert by_module["example.com/good"]["verdict"] == "allow"
            assert by_module["example.com/good"]["age_days"] > 100
        zips = [r.path for r in proxy.requests if r.path.endswith(".zip")]
        assert not any("modonly" in z for z in zips)


def test_audit_from_the_upstreams_exits_0_when_all_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = FixtureProxy(ModuleSet(ALL), name="fixtures").start_in_thread()
    try:
        rules = _rules(tmp_path, proxy.url)
        go_sum = tmp_path / "go.sum"
        go_sum.write_text("\n".join([*gosum_lines(GOOD), *gosum_lines(DUAL)]) + "\n")
        assert main(["audit", "--rules", str(rules), "--tenant", "finance", str(go_sum)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == [
            "MODULE",
            "VERSION",
            "LICENCE",
            "AGE",
            "VULNERABILITIES",
            "VERDICT",
        ]
        assert out[-1] == "0 of 2 module version(s) refused by the policy of tenant finance"
        go_list = tmp_path / "list.txt"
        go_list.write_text(f"example.com/app\n{GPL.path} {GPL.version}\n")
        assert main(["audit", "--rules", str(rules), "--tenant", "finance", str(go_list)]) == 1
        assert GPL_LINE in capsys.readouterr().out.splitlines()
        assert main(["audit", "--rules", str(rules), "--tenant", "open", str(go_list)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            "no policy applies to tenant open: 1 module version(s) not checked"
        )
    finally:
        proxy.stop()


def test_a_module_the_upstreams_lack_fails_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = FixtureProxy(ModuleSet([GOOD]), name="fixtures").start_in_thread()
    try:
        rules = _rules(tmp_path, proxy.url)
        listed = tmp_path / "list.txt"
        listed.write_text("example.com/missing v1.0.0\n")
        assert main(["audit", "--rules", str(rules), "--tenant", "finance", str(listed)]) == 1
        out = capsys.readouterr().out
        assert "example.com/missing@v1.0.0: refused by the policy of tenant finance: " in out
    finally:
        proxy.stop()


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = one_pool_rules(tmp_path / "rules.yaml", {"a": "https://a.example"})
    empty = tmp_path / "go.sum"
    empty.write_text("")
    assert main(["audit", "--rules", str(rules), str(empty)]) == 2
    assert "no module versions" in capsys.readouterr().err
    assert main(["audit", "--rules", str(rules), "--tenant", "nobody", str(empty)]) == 2
    assert main(["audit", "--rules", str(rules), str(tmp_path / "absent")]) == 2


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    import io

    from router.audit import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(stream)
        bar(1, 4)
        bar(4, 4)
        bar.clear()
    assert pipe.getvalue() == ""
    assert tty.getvalue() == (
        "\raudit [#######.......................] 1/4"
        "\raudit [##############################] 4/4\r\033[K"
    )
