"""`goproxy-router warm` and POST /debug/warm through a real gateway over a loopback upstream:
what each go.sum line fetches, the report (fetched, present, refused, failed), the store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from support.gateway import gateway_in_process, one_pool_rules, wait_for
from support.gomod import ModuleSet, gosum_lines, simple_module
from support.goproxy_server import FixtureProxy

from router.appkeys import ANSWERS
from router.cli import main

LIB = simple_module("example.com/lib", "v0.1.0")
DEP = simple_module("example.com/dep", "v1.0.0")
BANNED = simple_module("example.com/banned", "v1.0.0")


def _go_sum() -> str:
    lines = [*gosum_lines(LIB), *gosum_lines(BANNED)]
    lines += [line for line in gosum_lines(DEP) if "/go.mod" in line]  # graph only
    lines.append("example.com/missing v9.9.9 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    return "\n".join(lines) + "\n"


def _rules(tmp_path: Path, url: str) -> Path:
    return one_pool_rules(
        tmp_path / "rules.yaml",
        {"a": url},
        cache={"memory": 0, "dir": str(tmp_path / "store")},
        admin={"networks": ["127.0.0.0/8"]},
        tenants=[{"id": "ci", "deny": ["example.com/banned"]}],
    )


async def test_warm_fetches_what_the_build_needs_and_reports_each_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    go_sum = tmp_path / "go.sum"
    go_sum.write_text(_go_sum())
    async with (
        FixtureProxy(ModuleSet([LIB, DEP, BANNED]), name="a") as up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
    ):
        args = ["warm", "--gateway", gw.url, "--tenant", "ci", "--json", str(go_sum)]
        assert await asyncio.to_thread(main, args) == 1  # something refused or failed
        report = json.loads(capsys.readouterr().out)
        assert report["summary"] == {"fetched": 4, "present": 0, "refused": 3, "failed": 3}
        assert report["versions"] == 4
        why = {(p["module"], p["file"]): (p["outcome"], p["reason"]) for p in report["problems"]}
        outcome, reason = why[("example.com/banned", "zip")]
        assert outcome == "refused" and "deny rule" in reason
        outcome, reason = why[("example.com/missing", "info")]
        assert outcome == "failed" and reason.startswith("404")
        # a /go.mod-only line needs the go.mod alone
        assert up.count("/example.com/dep/@v/v1.0.0.mod") == 1
        assert up.count("/example.com/dep/@v/v1.0.0.zip") == 0
        assert up.count("/example.com/dep/@v/v1.0.0.info") == 0
        assert gw.app is not None
        answers = gw.app[ANSWERS]
        assert answers is not None and answers.tiers.store is not None
        store = answers.tiers.store
        await wait_for(lambda: len(store) == 4)

        needed = tmp_path / "needed.sum"
        needed.write_text("\n".join([*gosum_lines(LIB), *gosum_lines(DEP)[1:]]) + "\n")
        args = ["warm", "--gateway", gw.url, str(needed)]
        assert await asyncio.to_thread(main, args) == 0
        assert capsys.readouterr().out.strip() == (
            "warm: 4 file(s) of 2 module version(s): 0 fetched, 4 present, 0 refused, 0 failed"
        )
        assert up.count("/example.com/lib/@v/v0.1.0.zip") == 1  # from the store since

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.url}/debug/warm", data=needed.read_bytes()) as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert doc["summary"] == {"fetched": 0, "present": 4, "refused": 0, "failed": 0}
            body = _go_sum().encode()
            params = {"tenant": "ci"}
            async with http.post(f"{gw.url}/debug/warm", data=body, params=params) as resp:
                doc = await resp.json()
            assert doc["summary"]["refused"] == 3
            async with http.post(f"{gw.url}/debug/warm", data=b"nothing here") as resp:
                assert resp.status == 400
                assert "no module versions" in await resp.text()


def test_warm_reports_an_unreadable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["warm", "--gateway", "http://127.0.0.1:9", str(tmp_path / "go.sum")]) == 2
    assert "No such file" in capsys.readouterr().err
