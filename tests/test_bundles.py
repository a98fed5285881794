"""Air-gap bundles: export through a gateway with a live upstream, import into the store of
a second gateway whose upstream is unreachable, and `go build` through it with a fresh module
cache; and every way a bundle is refused (a wrong hash, a path outside, a link, a missing
file) leaving nothing in the store."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.gateway import gateway_in_process, one_pool_rules
from support.gocmd import go_env, run_go, write_main_module
from support.gomod import ModuleSet, gosum_lines, simple_module
from support.goproxy_server import FixtureProxy

from router.cli import main

DEP = simple_module("example.com/dep", "v1.2.0")
LIB = simple_module("example.com/lib", "v0.3.0", deps=[DEP])
GRAPH_ONLY = simple_module("example.com/dep", "v1.1.0")  # an older version: its go.mod only


def _go_sum(*, graph_only: bool = True) -> str:
    lines = [*gosum_lines(LIB), *gosum_lines(DEP)]
    if graph_only:
        lines += [line for line in gosum_lines(GRAPH_ONLY) if "/go.mod" in line]
    return "\n".join(sorted(lines)) + "\n"


def _status_and_body(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _offline_rules(tmp_path: Path) -> Path:
    """An air-gapped gateway: `network: offline` (only what its store holds is served),
    and its only upstream could not answer anyway (nothing listens on port 9)."""
    return one_pool_rules(
        tmp_path / "offline.yaml",
        {"gone": "http://127.0.0.1:9"},
        cache={"memory": 0, "dir": str(tmp_path / "offline-store")},
        network="offline",
    )


async def _export(tmp_path: Path, go_sum: str, out: Path) -> int:
    path = tmp_path / "go.sum"
    path.write_text(go_sum)
    async with FixtureProxy(ModuleSet([LIB, DEP, GRAPH_ONLY]), name="live") as up:
        rules = one_pool_rules(tmp_path / "live.yaml", {"live": up.url})
        async with gateway_in_process(rules) as gw:
            return await asyncio.to_thread(
                main, ["export", str(path), str(out), "--gateway", gw.url]
            )


@pytest.mark.e2e
async def test_export_import_and_go_build_behind_an_air_gap(
    tmp_path: Path, gocache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "out.tar"
    assert await _export(tmp_path, _go_sum(), bundle) == 0
    assert "export: 7 file(s)" in capsys.readouterr().out
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(names[0]).read())  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    assert "files/example.com/dep/@v/v1.1.0.mod" in names
    assert "files/example.com/dep/@v/v1.1.0.zip" not in names  # /go.mod-only line: no zip
    assert all(len(e["sha256"]) == 64 for e in manifest["files"])
    assert {e["file"] for e in manifest["files"] if "h1" in e} == {"zip", "mod"}

    rules = _offline_rules(tmp_path)
    async with gateway_in_process(rules) as gw:  # running before the import: found on a miss
        assert await asyncio.to_thread(main, ["import", str(bundle), "--rules", str(rules)]) == 0
        assert "import: 7 file(s)" in capsys.readouterr().out
        fresh = tmp_path / "client"
        env = go_env(fresh, gw.url, gocache=gocache)
        app = write_main_module(fresh / "main", "example.com/main", [LIB])
        (app / "go.mod").write_text(
            (app / "go.mod").read_text() + f"\nrequire {DEP.path} {DEP.version} // indirect\n"
        )
        (app / "go.sum").write_text(_go_sum(graph_only=False))
        (await run_go(["build", "-o", str(tmp_path / "hello"), "."], app, env)).check()
        missing = await asyncio.to_thread(_status_and_body, gw.url + "/example.com/nope/@v/list")
        assert missing[0] == 404 and "offline mode" in missing[1]
    proc = await asyncio.create_subprocess_exec(
        str(tmp_path / "hello"), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert f"{LIB.path}@{LIB.version}" in out.decode()


async def test_export_refuses_a_file_whose_hash_differs_from_go_sum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = _go_sum().replace(gosum_lines(LIB)[0].split()[2], "h1:" + "A" * 43 + "=")
    out = tmp_path / "out.tar"
    assert await _export(tmp_path, wrong, out) == 1
    err = capsys.readouterr().err
    assert "example.com/lib@v0.3.0 .zip: zip hash" in err and "not written" in err
    assert not out.exists() and not list(tmp_path.glob(".out.tar*"))


def _members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(bundle) as tar:
        out = []
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            out.append((m, fh.read() if fh is not None else b""))
        return out


def _write(bundle: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(bundle, "w") as tar:
        for info, data in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)


def _store_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "offline-store"
    return [p for sub in ("index", "data") for p in (root / sub).rglob("*") if p.is_file()]


@pytest.fixture
async def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("export")
    bundle = where / "good.tar"
    assert await _export(where, _go_sum(), bundle) == 0
    return bundle


def _tampered(good: Path, dest: Path, change: str) -> Path:
    members = _members(good)
    if change == "one byte":
        members = [
            (m, data[:-1] + bytes([data[-1] ^ 1]) if m.name.endswith("lib/@v/v0.3.0.mod") else data)
            for m, data in members
        ]
    elif change == "outside":
        evil = tarfile.TarInfo("../evil.mod")
        members.append((evil, b"module evil\n"))
    elif change == "link":
        link = tarfile.TarInfo("files/example.com/lib/@v/v0.3.0.info")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members = [(m, d) for m, d in members if not m.name.endswith("v0.3.0.info")]
        members.append((link, b""))
    elif change == "missing":
        members = [(m, d) for m, d in members if not m.name.endswith("dep/@v/v1.2.0.zip")]
    elif change == "no manifest":
        members = members[1:]
    _write(dest, members)
    if change == "truncated":
        data = dest.read_bytes()
        last = max(m.offset_data for m, _ in members if m.isfile())
        dest.write_bytes(data[: last + 100])  # cut inside the last member's bytes
    return dest


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("one byte", "example.com/lib/@v/v0.3.0.mod: sha256 differs from the manifest"),
        ("outside", "member '../evil.mod': a path outside the bundle"),
        ("link", "not a regular file (links and devices are refused)"),
        ("missing", "example.com/dep/@v/v1.2.0.zip: listed but not in the bundle"),
        ("no manifest", "not a bundle: its first member is not manifest.json"),
        ("truncated", "example.com/lib/@v/v0.3.0.zip: unreadable member"),
    ],
)
async def test_a_bad_bundle_imports_nothing_and_says_why(
    good_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    said: str,
) -> None:
    bad = _tampered(good_bundle, tmp_path / "bad.tar", change)
    rules = _offline_rules(tmp_path)
    assert await asyncio.to_thread(main, ["import", str(bad), "--rules", str(rules)]) == 1
    err = capsys.readouterr().err
    assert said in err and "nothing imported" in err
    assert _store_files(tmp_path) == []
    assert not (tmp_path / "evil.mod").exists()
    assert list((tmp_path / "offline-store" / "tmp").iterdir()) == []


async def test_a_module_the_rules_verify_is_skipped_not_imported(
    good_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = one_pool_rules(
        tmp_path / "verify.yaml",
        {"gone": "http://127.0.0.1:9"},
        cache={"memory": 0, "dir": str(tmp_path / "offline-store")},
        tenants=[{"id": "devops", "verify_checksums": True}],
    )
    args = ["import", str(good_bundle), "--rules", str(rules), "--tenant", "devops"]
    assert await asyncio.to_thread(main, args) == 1
    out = capsys.readouterr().out
    # .mod and .zip are verified for this tenant; .info never is
    assert out.count("an import cannot reach") == 5
    assert "import: 2 file(s)" in out and "5 skipped" in out
    assert len(list((tmp_path / "offline-store" / "index").glob("*.json"))) == 2
