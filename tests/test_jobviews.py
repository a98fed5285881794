"""L3 job views and offline mode through the gateway: over HTTP, and with the real go
command using the stock path-prefix form GOPROXY=http://127.0.0.1:PORT/job/ID."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.clock import Clock
from support.gateway import gateway_in_process, one_pool_rules, wait_for
from support.gocmd import go_env, run_go
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy

from router import cli
from router.appkeys import ANSWERS, JOBS, RELOADER
from router.jobviews import MemoryViews

LIB1 = simple_module("example.com/lib", "v1.0.0")
LIB2 = simple_module("example.com/lib", "v1.1.0")
LATEST = "/example.com/lib/@latest"


async def _get(h: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str]:
    async with h.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


def _version(body: str) -> str:
    return str(json.loads(body)["Version"])


def _rules(tmp_path: Path, url: str, **extra: Any) -> Path:
    extra.setdefault("tenants", [{"id": "alpha"}, {"id": "beta"}])
    return one_pool_rules(tmp_path / "rules.yaml", {"up": url}, **extra)


# ------------------------------------------------------------------ HTTP


async def test_a_job_sees_its_first_answer_and_another_tenant_does_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="goproxy_router.access")
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        alpha = {"X-Tenant-ID": "alpha", "X-CI-Job-ID": "run-7"}
        status, body = await _get(h, gw.url + LATEST, **alpha)
        assert (status, _version(body)) == (200, "v1.0.0")
        up.modules.add(LIB2)
        assert _version((await _get(h, gw.url + LATEST, **alpha))[1]) == "v1.0.0"  # pinned
        listed = await _get(h, gw.url + "/job/run-7/example.com/lib/@v/list", **alpha)
        assert listed == (200, "v1.0.0\nv1.1.0\n")  # another question: first asked now
        beta = {"X-Tenant-ID": "beta", "X-CI-Job-ID": "run-7"}  # same id, other tenant
        assert _version((await _get(h, gw.url + LATEST, **beta))[1]) == "v1.1.0"
        assert _version((await _get(h, gw.url + LATEST))[1]) == "v1.1.0"  # no job
        # immutable answers are served as usual
        info = await _get(h, gw.url + "/example.com/lib/@v/v1.1.0.info", **alpha)
        assert info[0] == 200

        assert gw.app is not None
        jobs = gw.app[JOBS]
        assert (await jobs.show("beta", "run-7")) is not None
        assert (await jobs.show("alpha", "run-7"))["job"] == "run-7"  # type: ignore[index]
    logged = [r.fields for r in caplog.records if r.name == "goproxy_router.access"]  # type: ignore[attr-defined]
    assert [f["ci_job"] for f in logged] == ["run-7", "run-7", "run-7", "run-7", None, "run-7"]


async def test_a_reload_applies_new_job_bounds_to_the_views_already_held(
    tmp_path: Path,
) -> None:
    clock = Clock()
    alpha = {"X-Tenant-ID": "alpha", "X-CI-Job-ID": "run-9"}
    async with FixtureProxy(ModuleSet([LIB1]), name="up") as up:
        rules = _rules(tmp_path, up.url, jobs={"ttl": "1h"})
        async with (
            gateway_in_process(rules, watch=True, clock=clock) as gw,
            aiohttp.ClientSession() as h,
        ):
            assert gw.app is not None
            assert _version((await _get(h, gw.url + LATEST, **alpha))[1]) == "v1.0.0"
            up.modules.add(LIB2)
            clock.advance(60)
            assert _version((await _get(h, gw.url + LATEST, **alpha))[1]) == "v1.0.0"
            assert gw.app[JOBS].interval == 60.0  # a quarter of the TTL, at most 60 s

            _rules(tmp_path, up.url, jobs={"ttl": "20s", "max_views": 5})
            reloader = gw.app[RELOADER]
            assert reloader is not None and await reloader.reload("test")
            assert gw.app[JOBS].interval == 5.0
            clock.advance(30)  # idle past the new TTL, well within the old one
            assert await gw.app[JOBS].show("alpha", "run-9") is None
            assert _version((await _get(h, gw.url + LATEST, **alpha))[1]) == "v1.1.0"


async def test_bad_job_ids_are_400(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="goproxy_router.access")
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        status, text = await _get(h, gw.url + LATEST, **{"X-CI-Job-ID": "no spaces"})
        assert status == 400 and "job id in X-CI-Job-ID may only hold" in text
        status, text = await _get(h, gw.url + "/job/" + "x" * 201 + LATEST)
        assert status == 400 and "longer than 200 characters" in text
        status, text = await _get(h, gw.url + "/job/42")
        assert status == 400 and "nothing after /job/42/" in text
        assert up.count() == 0
    logged = [r.fields for r in caplog.records if r.name == "goproxy_router.access"]  # type: ignore[attr-defined]
    assert [len(f["ci_job"]) for f in logged] == [9, 200, 2]


async def test_network_offline_serves_only_the_cache(tmp_path: Path) -> None:
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url, network="offline")) as gw,
        aiohttp.ClientSession() as h,
    ):
        status, text = await _get(h, gw.url + "/example.com/lib/@v/v1.0.0.mod")
        assert status == 404
        assert "offline mode (network: offline)" in text and "example.com/lib@v1.0.0" in text
        status, text = await _get(h, gw.url + "/job/9/" + LATEST.lstrip("/"))
        assert status == 404 and "network: offline" in text
        assert up.count() == 0 and up.probes == []  # not even a probe


async def test_job_show_and_drop_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(rules := _rules(tmp_path, up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        await _get(h, gw.url + LATEST, **{"X-Tenant-ID": "alpha", "X-CI-Job-ID": "run-1"})

        def job(*args: str) -> tuple[int, str]:
            out = io.StringIO()
            with redirect_stdout(out):
                code = cli.main(["job", *args, "--rules", str(rules), "--gateway", gw.url])
            return code, out.getvalue()

        code, out = await asyncio.to_thread(job, "show", "run-1", "--tenant", "alpha")
        shown = json.loads(out)
        assert code == 0 and [p["question"] for p in shown["pins"]] == ["example.com/lib/@latest"]
        code, _ = await asyncio.to_thread(job, "show", "run-1")  # anonymous: no such view
        assert code == 1
        code, out = await asyncio.to_thread(job, "drop", "run-1", "--tenant", "alpha")
        assert code == 0 and json.loads(out)["dropped"] is True
        code, _ = await asyncio.to_thread(job, "show", "run-1", "--tenant", "alpha")
        assert code == 1
        async with h.get(gw.url + "/debug/jobs?job=bad%20id") as resp:
            assert resp.status == 400
        async with h.get(gw.url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'goproxy_router_job_pins_total{event="pinned"} 1.0' in metrics
        assert 'goproxy_router_job_view_drops_total{reason="admin"} 1.0' in metrics


# ------------------------------------------------------------------ the real go command


async def _latest(tmp_path: Path, name: str, goproxy: str) -> Any:
    work = tmp_path / name
    work.mkdir()
    env = go_env(work, goproxy)
    return await run_go(["list", "-m", "example.com/lib@latest"], work, env)


@pytest.mark.e2e
async def test_go_runs_of_one_job_resolve_the_same_version(tmp_path: Path) -> None:
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
    ):
        step1 = await _latest(tmp_path, "step1", gw.url + "/job/42")
        assert step1.check().stdout.split() == ["example.com/lib", "v1.0.0"]
        up.modules.add(LIB2)  # a release lands in the middle of the job
        step2 = await _latest(tmp_path, "step2", gw.url + "/job/42")
        assert step2.check().stdout.split() == ["example.com/lib", "v1.0.0"]
        other = await _latest(tmp_path, "other", gw.url + "/job/43")
        assert other.check().stdout.split() == ["example.com/lib", "v1.1.0"]

        assert gw.app is not None
        jobs = gw.app[JOBS]
        assert jobs is not None and isinstance(jobs.store, MemoryViews)
        jobs.store.clock = lambda: time.time() + 3600  # an hour later: job 42's view is idle
        assert ("-/42", "idle") in await jobs.collect()
        expired = await _latest(tmp_path, "expired", gw.url + "/job/42")
        assert expired.check().stdout.split() == ["example.com/lib", "v1.1.0"]


@pytest.mark.e2e
async def test_hermetic_job_serves_what_is_cached_and_names_the_mode(tmp_path: Path) -> None:
    cache = {"memory": "16MiB", "dir": str(tmp_path / "store")}
    async with (
        FixtureProxy(ModuleSet([LIB1, LIB2]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url, cache=cache)) as gw,
    ):
        warm = tmp_path / "warm"
        warm.mkdir()
        done = await run_go(
            ["mod", "download", "-json", "example.com/lib@v1.0.0"], warm, go_env(warm, gw.url)
        )
        done.check()
        assert gw.app is not None
        store = gw.app[ANSWERS].tiers.store
        assert store is not None
        await wait_for(lambda: len(store) == 3)  # .info, .mod and .zip kept
        asked = up.count()
        sealed = tmp_path / "sealed"
        sealed.mkdir()
        env = go_env(sealed, gw.url + "/job/test-1/offline")
        ok = await run_go(["mod", "download", "example.com/lib@v1.0.0"], sealed, env)
        ok.check()
        refused = await run_go(["mod", "download", "example.com/lib@v1.1.0"], sealed, env)
        assert refused.returncode != 0
        assert "offline mode (job offline (/job/ID/offline))" in refused.stderr
        assert up.count() == asked  # no upstream was asked


async def test_a_route_on_the_job_header_matches_a_job_id_given_in_the_path(
    tmp_path: Path,
) -> None:
    routes = [
        {
            "name": "test-jobs",
            "match": {"header": {"X-CI-Job-ID": {"regex": "^test-"}}},
            "pool": "main",
            "offline": True,
        }
    ]
    async with (
        FixtureProxy(ModuleSet([LIB1]), name="up") as up,
        gateway_in_process(_rules(tmp_path, up.url, routes=routes)) as gw,
    ):
        work = tmp_path / "w"
        work.mkdir()
        env = go_env(work, gw.url + "/job/test-2")  # the stock go command: no header
        refused = await run_go(["mod", "download", "example.com/lib@v1.0.0"], work, env)
        assert refused.returncode != 0
        assert "route test-jobs" in refused.stderr
        assert up.count() == 0
        other = go_env(work, gw.url + "/job/build-2")
        (await run_go(["mod", "download", "example.com/lib@v1.0.0"], work, other)).check()


# ------------------------------------------------------------------ rules and explain

EXAMPLE = Path(__file__).resolve().parent.parent / "rules" / "examples" / "jobs.yaml"


def test_explain_shows_the_job_pinned_and_offline() -> None:
    from router.config import load_or_raise
    from router.explain import Question, explain

    rules = load_or_raise([EXAMPLE])
    sealed = explain(
        rules, Question("golang.org/x/mod", kind="latest", headers={"X-CI-Job-ID": "test-9"})
    )
    assert sealed["job"] == {"id": "test-9", "pinned": True}
    assert sealed["offline"] == "route offline-tests: offline"
    path = explain(rules, Question("/job/77/offline/golang.org/x/mod/@v/v0.20.0.zip"))
    assert path["job"] == {"id": "77", "pinned": False}  # immutable: served as usual
    assert path["offline"] == "job offline (/job/ID/offline)"
    plain = explain(rules, Question("golang.org/x/mod", kind="list"))
    assert (plain["job"], plain["offline"]) == (None, None)
    bad = explain(rules, Question("golang.org/x/mod", headers={"X-CI-Job-ID": "a b"}))
    assert bad["answer"]["status"] == 400
    assert rules.jobs.ttl == 7200.0 and rules.jobs.max_bytes == 512 << 20


def test_validate_names_bad_job_keys(tmp_path: Path) -> None:
    from router.config import load_rules

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nupstreams: [{name: up, url: 'https://proxy.golang.org'}]\n"
        "pools: {main: {upstreams: [up]}}\nnetwork: airgapped\njobs: {max_views: 0}\n"
        "routes: [{name: r, pool: main, offline: maybe}]\n"
    )
    problems = [str(p) for p in load_rules([bad]).errors]
    assert any(p.startswith(f"{bad}:4:") and "online, offline" in p for p in problems)
    assert any(p.startswith(f"{bad}:5:") for p in problems)
    assert any(p.startswith(f"{bad}:6:") for p in problems)
