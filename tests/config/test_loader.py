"""Rules loading: every broken file reports the exact FILE:LINE, good rules load whole."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import main
from router.config import load_rules

HERE = Path(__file__).parent
BROKEN = sorted((HERE / "broken").iterdir())
REPO = HERE.parents[1]


def _expectations(path: Path) -> list[str]:
    """The `# expect: LINE: MESSAGE` lines of a broken file (or of every file in a folder).

    In a folder's files, {dir} stands for the folder, for messages naming another file.
    """
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    out = []
    for file in files:
        for line in file.read_text().splitlines():
            match = re.match(r"# expect: (\d+: .*)$", line)
            if match:
                out.append(f"{file}:{match.group(1)}".replace("{dir}", str(path)))
    return out


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_rules_report_file_and_line(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    printed = (captured.err + captured.out).splitlines()
    missing = [e for e in expected if e not in printed]
    assert not missing, f"not printed: {missing}; printed: {printed}"
    extra = [p for p in printed if p not in expected]
    assert not extra, f"printed but not expected (a follow-on error?): {extra}"


def test_validate_cli_exits_1_and_prints_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    path = HERE / "broken" / "bad_types.yaml"
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) >= 5
    assert "Traceback" not in err
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", ln) for ln in err.strip().splitlines())


def test_installed_command_prints_the_same_lines() -> None:
    """The console script, in its own process, prints what the corpus expects: no traceback."""
    path = HERE / "broken" / "yaml_bad_date.yaml"
    script = Path(sys.executable).with_name("goproxy-router")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "router"]
    done = subprocess.run(
        [*command, "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == _expectations(path)
    assert done.stdout == ""


def test_shipped_rules_validate() -> None:
    assert main(["validate", str(REPO / "rules")]) == 0


def test_folder_merges_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "10-upstreams.yaml").write_text(
        "version: 1\nupstreams:\n  - {name: a, url: 'https://a.example'}\n"
    )
    (tmp_path / "20-pools.yaml").write_text(
        "version: 1\npools: {main: {upstreams: [a]}}\n"
        "selection: {weights: {rtt: 0.5, cost: 0.5, heat: 0}}\n"
    )
    result = load_rules([tmp_path])
    assert result.errors == []
    assert result.rules is not None
    assert result.rules.pool("main").upstreams == ("a",)
    assert result.rules.selection.weights.rtt == 0.5


def test_key_set_in_two_files_is_an_error(tmp_path: Path) -> None:
    base = "version: 1\nupstreams:\n  - {name: a, url: 'https://a.example'}\n"
    (tmp_path / "a.yaml").write_text(base + "pools: {main: {upstreams: [a]}}\nredis: redis://x\n")
    (tmp_path / "b.yaml").write_text("version: 1\nredis: redis://y\n")
    result = load_rules([tmp_path])
    assert any("'redis' is already set at" in str(p) for p in result.errors)


def test_units_and_defaults() -> None:
    result = load_rules([REPO / "rules"])
    assert result.rules is not None
    cache = result.rules.cache
    assert cache.memory == 256 << 20
    assert cache.ttl.list == 60.0
    assert result.rules.upstream("official").timeouts.total == 600.0


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert any("empty" in str(p) for p in load_rules([empty]).errors)
    assert load_rules([tmp_path / "nope.yaml"]).errors


def test_shadowed_route_is_a_warning_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = HERE / "shadowed.yaml"
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:12: warning: route 'old-zips' can never match: route 'everything-zip'" in out


def test_examples_validate_cleanly() -> None:
    result = load_rules([REPO / "rules" / "examples"])
    assert result.rules is not None
    assert result.problems == []


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["upstreams"]["type"] == "array"
    assert "tenants" in schema["properties"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nupstreams: [{name: a, url: 'ftp://x'}]\n",
        "version: 1\n",
        "version: 1\npools: {}\n",
        "version: 1\nupstreams: {}\npools: []\n",
        "- just\n- a list\n",
        "version: 1\ntenants: [{}]\nroutes: [{}]\n",
        "version: 2\n",
        "version: 1\nselection: {weights: {rtt: x}}\n",
        "version: 1\nredis: 2024-13-01\n",
        "2024-13-01\n",
        "version: 1\nredis: !custom x\n",
        "version: 1\nredis: !!int x\n",
        'version: 1\nredis: "bell\x07"\n',
        "version: 1\npools: {a: [\n",
    ],
)
def test_loader_never_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    result = load_rules([path])
    assert result.rules is None
    assert result.errors
    assert all(str(p).startswith(f"{path}:") for p in result.errors)
