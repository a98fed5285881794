"""Issue 8 end to end: verify-before-serve against a real checksum DB, the checked sumdb
proxy, and mirror rollouts, with real upstreams, a real checksum DB and the real go command.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.gateway import gateway_in_process, write_rules
from support.gocmd import go_env, run_go
from support.gomod import (
    FixtureModule,
    ModuleSet,
    hash_mod,
    hash_module,
    large_module,
    module_zip_bytes,
    simple_module,
    write_zip,
)
from support.goproxy_server import Fault, FixtureProxy
from support.sumdb_server import TestSumDB

DB = "sum.test.example"


def _tampered(m: FixtureModule) -> FixtureModule:
    """Same path and version, other bytes: what a compromised mirror would serve."""
    files = dict(m.files)
    files["evil.go"] = b"package " + m.path.rsplit("/", 1)[-1].encode() + b"\n// evil\n"
    return FixtureModule(path=m.path, version=m.version, files=files, time=m.time)


def _db_cfg(db: TestSumDB) -> dict[str, str]:
    return {"name": db.name, "key": db.verifier_key, "url": db.url}


async def _get(
    url: str, *, tenant: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    sent = dict(headers or {})
    if tenant is not None:
        sent["X-Tenant-ID"] = tenant
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def _metric(gw_url: str, name: str, **labels: str) -> float:
    _, body, _ = await _get(gw_url + "/metrics")
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


VERIFY_EXAMPLE_COM = [
    {
        "name": "verified",
        "match": {"module": ["example.com/*"]},
        "pool": "main",
        "verify_checksums": True,
    }
]
"""A route verifying every example.com module, for clients that send no tenant."""


def _bad_then_good(tmp_path: Path, bad: FixtureProxy, good: FixtureProxy, **extra: Any) -> Path:
    """Rules with one pool `main`: the tampering upstream first, the honest one next."""
    extra.setdefault("default", {"pool": "main"})
    return write_rules(
        tmp_path / "rules.yaml",
        [{"name": "bad", "url": bad.url}, {"name": "good", "url": good.url}],
        {"main": {"upstreams": ["bad", "good"], "mode": "ordered"}},
        **extra,
    )


async def _reset_rollout(*args: str) -> subprocess.CompletedProcess[str]:
    """`goproxy-router rollout reset ARGS`, run as a user would, off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "router", "rollout", "reset", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _one_verifying_pool(
    tmp_path: Path, upstream: FixtureProxy, db: TestSumDB, *, store: bool = False
) -> Path:
    """Pool `main` of one upstream for tenants devops (verifying) and health (not), checked
    against `db`; with `store`, an artifact store too."""
    extra: dict[str, Any] = {}
    if store:
        extra["cache"] = {"memory": "16MiB", "dir": str(tmp_path / "store")}
    return write_rules(
        tmp_path / "rules.yaml",
        [{"name": upstream.name, "url": upstream.url}],
        {"main": {"upstreams": [upstream.name]}},
        tenants=_tenants("main", "main"),
        checksum_dbs=[_db_cfg(db)],
        **extra,
    )


def _tenants(verify_pool: str, plain_pool: str) -> list[dict[str, Any]]:
    return [
        {"id": "devops", "pool": verify_pool, "verify_checksums": True},
        {"id": "health", "pool": plain_pool},
    ]


# ------------------------------------------------------------------ verify before serve


async def test_verifying_tenant_gets_the_true_zip_past_a_tampering_upstream(
    tmp_path: Path,
) -> None:
    lib = simple_module("example.com/verified", "v1.0.0")
    db = TestSumDB(DB)
    db.add_module(lib)
    async with (
        FixtureProxy(ModuleSet([_tampered(lib)]), name="bad") as bad,
        FixtureProxy(ModuleSet([lib]), name="good") as good,
        db,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "bad", "url": bad.url}, {"name": "good", "url": good.url}],
            {
                # not-found fallback: without verification the first 200 would win
                "verified": {"upstreams": ["bad", "good"], "mode": "ordered"},
                "plain": {"upstreams": ["bad"], "mode": "ordered"},
            },
            tenants=_tenants("verified", "plain"),
            default={"pool": "plain"},
            checksum_dbs=[_db_cfg(db)],
        )
        async with gateway_in_process(rules) as gw:
            zip_url = f"{gw.url}{lib.url_path('zip')}"
            status, body, headers = await _get(zip_url, tenant="devops")
            assert status == 200, body
            assert body == module_zip_bytes(lib)
            assert headers["X-Router-Upstream"] == "good"
            assert (
                await _metric(gw.url, "goproxy_router_checksum_mismatches_total", upstream="bad")
                == 1
            )

            # the verified answer is cached as verified; the tampered one was never kept
            bad_zips = bad.count(".zip")
            status, body, headers = await _get(zip_url, tenant="devops")
            assert (status, body) == (200, module_zip_bytes(lib))
            assert headers["X-Router-Upstream"] == "cache"
            assert bad.count(".zip") == bad_zips

            # a non-verifying tenant on another pool is unaffected: it gets what its pool has
            status, body, headers = await _get(zip_url, tenant="health")
            assert status == 200
            assert body == module_zip_bytes(_tampered(lib))
            assert headers["X-Router-Upstream"] == "bad"

            # the go.mod is verified too (same bytes here: served by the first upstream)
            status, body, _ = await _get(f"{gw.url}{lib.url_path('mod')}", tenant="devops")
            assert (status, body) == (200, lib.mod)
            # the mismatching upstream is penalised in selection
            view = await _get(gw.url + "/debug/upstreams")
            assert json.loads(view[1])["upstreams"]["bad"]["health"] == "ejected"
            assert json.loads(view[1])["checksum_dbs"][DB]["tree_size"] == 1


async def test_a_tampered_go_mod_is_refused_and_the_next_upstream_serves(tmp_path: Path) -> None:
    lib = simple_module("example.com/modcheck", "v1.2.0")
    evil = FixtureModule(
        path=lib.path,
        version=lib.version,
        files=lib.files,
        time=lib.time,
        go_mod=b"module example.com/modcheck\n\nrequire example.com/evil v6.6.6\n",
    )
    db = TestSumDB(DB)
    db.add_module(lib)
    async with (
        FixtureProxy(ModuleSet([evil]), name="bad") as bad,
        FixtureProxy(ModuleSet([lib]), name="good") as good,
        db,
    ):
        rules = _bad_then_good(
            tmp_path,
            bad,
            good,
            routes=VERIFY_EXAMPLE_COM,
            checksum_dbs=[_db_cfg(db)],
            cache={"memory": 0},
        )
        async with gateway_in_process(rules) as gw:
            status, body, headers = await _get(f"{gw.url}{lib.url_path('mod')}")
            assert (status, body) == (200, lib.mod)
            assert headers["X-Router-Upstream"] == "good"


async def test_no_upstream_with_the_right_bytes_is_a_502_naming_both_hashes(
    tmp_path: Path,
) -> None:
    lib = simple_module("example.com/onlybad", "v0.3.0")
    db = TestSumDB(DB)
    db.add_module(lib)
    async with FixtureProxy(ModuleSet([_tampered(lib)]), name="bad") as bad, db:
        rules = _one_verifying_pool(tmp_path, bad, db, store=True)
        async with gateway_in_process(rules) as gw:
            zip_url = f"{gw.url}{lib.url_path('zip')}"
            for _ in range(2):  # nothing tampered was cached: the second ask is the same
                status, body, _ = await _get(zip_url, tenant="devops")
                assert status == 502
                text = body.decode()
                assert "\n" not in text.strip()
                assert hash_module(lib) in text
                assert hash_module(_tampered(lib)) in text
            assert not list((tmp_path / "store").rglob("*.zip"))
            assert await _metric(gw.url, "goproxy_router_checksum_mismatches_total") == 2


async def test_large_zip_is_verified_from_a_spool_and_kept_in_the_store(tmp_path: Path) -> None:
    big = large_module("example.com/big", "v1.0.0", 6 << 20)
    zip_path = write_zip(big, tmp_path / "big.zip")
    db = TestSumDB(DB)
    db.add(big.path, big.version, hash_module(big), hash_mod(big.mod))
    async with FixtureProxy(ModuleSet([big]), name="good") as good, db:
        rules = _one_verifying_pool(tmp_path, good, db, store=True)
        async with gateway_in_process(rules) as gw:
            url = f"{gw.url}{big.url_path('zip')}"
            first, second = await asyncio.gather(
                _get(url, tenant="devops"), _get(url, tenant="devops")
            )
            want = zip_path.read_bytes()
            assert first[0] == second[0] == 200
            assert first[1] == want and second[1] == want
            assert good.count(".zip") == 1  # the two were coalesced
            status, body, headers = await _get(url, tenant="devops")
            assert (status, headers["X-Router-Upstream"]) == (200, "cache")
            assert body == want


async def test_nosumdb_and_private_modules_are_never_looked_up(tmp_path: Path) -> None:
    corp = simple_module("corp.example.com/tool", "v1.0.0")
    other = simple_module("example.com/skipped", "v1.0.0")
    db = TestSumDB(DB)
    async with (
        FixtureProxy(ModuleSet([corp]), name="athens") as athens,
        FixtureProxy(ModuleSet([other]), name="pub") as pub,
        db,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "athens", "url": athens.url, "public": False},
                {"name": "pub", "url": pub.url},
            ],
            {"main": {"upstreams": ["athens", "pub"], "mode": "ordered"}},
            tenants=[
                {
                    "id": "devops",
                    "pool": "main",
                    "verify_checksums": True,
                    "private": ["corp.example.com/*"],
                }
            ],
            nosumdb=["example.com/skipped"],
            checksum_dbs=[_db_cfg(db)],
        )
        async with gateway_in_process(rules) as gw:
            for m in (corp, other):
                status, body, _ = await _get(f"{gw.url}{m.url_path('zip')}", tenant="devops")
                assert (status, body) == (200, module_zip_bytes(m))
            assert db.requests == []


async def test_a_bad_signature_fails_closed_and_counts(tmp_path: Path) -> None:
    lib = simple_module("example.com/signed", "v1.0.0")
    db = TestSumDB(DB)
    db.add_module(lib)
    db.tamper_signature = True
    async with FixtureProxy(ModuleSet([lib]), name="good") as good, db:
        rules = _one_verifying_pool(tmp_path, good, db)
        async with gateway_in_process(rules) as gw:
            status, body, _ = await _get(f"{gw.url}{lib.url_path('zip')}", tenant="devops")
            assert status == 502
            assert DB in body.decode() and "verif" in body.decode()
            counted = await _metric(
                gw.url, "goproxy_router_sumdb_inconsistent_total", sumdb=DB, reason="signature"
            )
            assert counted >= 1
            # a tenant that does not verify is not held hostage by the checksum DB
            status, _, _ = await _get(f"{gw.url}{lib.url_path('zip')}", tenant="health")
            assert status == 200


async def test_a_forked_log_fails_closed_and_raises_the_alarm(tmp_path: Path) -> None:
    first = simple_module("example.com/before", "v1.0.0")
    later = simple_module("example.com/after", "v1.0.0")
    db = TestSumDB(DB)
    db.add_module(first)
    async with FixtureProxy(ModuleSet([first, later]), name="good") as good, db:
        rules = _one_verifying_pool(tmp_path, good, db)
        async with gateway_in_process(rules) as gw:
            status, _, _ = await _get(f"{gw.url}{first.url_path('zip')}", tenant="devops")
            assert status == 200
            db.add_module(later)
            db.fork(keep=0)  # history rewritten: the new head does not extend the old one
            status, body, _ = await _get(f"{gw.url}{later.url_path('zip')}", tenant="devops")
            assert status == 502, body
            assert (
                await _metric(
                    gw.url, "goproxy_router_sumdb_inconsistent_total", sumdb=DB, reason="fork"
                )
                >= 1
            )
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert "fork" in (view["checksum_dbs"][DB]["alarm"] or "")


async def test_the_accepted_tree_head_survives_a_restart(tmp_path: Path) -> None:
    first = simple_module("example.com/kept", "v1.0.0")
    later = simple_module("example.com/afterrestart", "v1.0.0")
    db = TestSumDB(DB)
    db.add_module(first)
    async with FixtureProxy(ModuleSet([first, later]), name="good") as good, db:
        rules = _one_verifying_pool(tmp_path, good, db, store=True)
        async with gateway_in_process(rules) as gw:
            status, _, _ = await _get(f"{gw.url}{first.url_path('zip')}", tenant="devops")
            assert status == 200
        assert (tmp_path / "store" / "sumdb" / f"{DB}.latest").is_file()
        db.add_module(later)
        db.fork(keep=0)
        async with gateway_in_process(rules) as gw:  # a new process would load the same file
            status, body, _ = await _get(f"{gw.url}{later.url_path('zip')}", tenant="devops")
            assert status == 502, body


# ------------------------------------------------------------------ the sumdb proxy


async def test_go_verifies_through_the_gateway_and_a_second_run_fetches_no_tile_upstream(
    tmp_path: Path, gocache: Path
) -> None:
    mods = [simple_module(f"example.com/tiles{i}", "v1.0.0") for i in range(3)]
    db = TestSumDB(DB)
    for m in mods:
        db.add_module(m)
    async with FixtureProxy(ModuleSet(mods), name="mods") as proxy, db:
        rules = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "mods", "url": proxy.url}],
            {"main": {"upstreams": ["mods"]}},
            checksum_dbs=[_db_cfg(db)],  # no upstream proxies it: the gateway reads its url
        )
        async with gateway_in_process(rules) as gw:
            status, _, headers = await _get(f"{gw.url}/sumdb/{DB}/supported")
            assert status == 200 and headers["X-Router-Upstream"] == "none"
            targets = [f"{m.path}@{m.version}" for m in mods]
            env = go_env(tmp_path / "one", gw.url, gosumdb=db.verifier_key, gocache=gocache)
            first = await run_go(["mod", "download", "-json", *targets], tmp_path, env)
            sums = {o["Path"]: o["Sum"] for o in first.check().json_objects()}
            assert sums == {m.path: hash_module(m) for m in mods}
            tiles_after_first = len(db.requests_for("/tile/"))
            assert tiles_after_first > 0
            env2 = go_env(tmp_path / "two", gw.url, gosumdb=db.verifier_key, gocache=gocache)
            second = await run_go(["mod", "download", "-json", *targets], tmp_path, env2)
            second.check()
            assert len(db.requests_for("/tile/")) == tiles_after_first


async def test_an_inconsistent_sumdb_mirror_is_ejected_and_the_next_one_answers(
    tmp_path: Path,
) -> None:
    lib = simple_module("example.com/mirrored", "v1.0.0")
    honest = TestSumDB(DB, base_path=f"/sumdb/{DB}")
    liar = TestSumDB(DB, base_path=f"/sumdb/{DB}", signer_key=honest.signer.skey)
    for db in (honest, liar):
        db.add_module(lib)
    async with honest, liar:
        strip = len(honest.base_path)
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "liar", "url": liar.url[:-strip], "sumdb": [DB]},
                {"name": "honest", "url": honest.url[:-strip], "sumdb": [DB]},
            ],
            {"main": {"upstreams": ["liar", "honest"], "mode": "ordered"}},
            checksum_dbs=[{"name": DB, "key": honest.verifier_key}],
            cache={"memory": 0},
        )
        async with gateway_in_process(rules) as gw:
            lookup = f"{gw.url}/sumdb/{DB}/lookup/{lib.path}@{lib.version}"
            status, _, headers = await _get(lookup)
            assert (status, headers["X-Router-Upstream"]) == (200, "liar")  # first seen: trusted
            # the liar rewrites its history (same key, other log); the honest mirror grows
            other = simple_module("example.com/grown", "v1.0.0")
            honest.add_module(other)
            liar.add_module(other)
            liar.fork(keep=0)
            grown = f"{gw.url}/sumdb/{DB}/lookup/{other.path}@{other.version}"
            status, body, headers = await _get(grown)
            assert status == 200, body
            assert headers["X-Router-Upstream"] == "honest"
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert "liar" in view["checksum_dbs"][DB]["ejected"]
            # ejected: the next lookup goes to the honest mirror first
            status, _, headers = await _get(lookup)
            assert (status, headers["X-Router-Upstream"]) == (200, "honest")


# ------------------------------------------------------------------ rollouts


def _rollout_rules(tmp_path: Path, cand: str, base: str, **rollout: Any) -> Path:
    cfg = {"upstream": "cand", "compare_with": "base", "sample": 1.0, "max_mismatch": 0.05}
    cfg.update(rollout)
    return write_rules(
        tmp_path / "rules.yaml",
        [{"name": "cand", "url": cand}, {"name": "base", "url": base}],
        {"main": {"upstreams": ["cand", "base"], "mode": "ordered"}},
        default={"pool": "main"},
        rollouts=[cfg],
        cache={"memory": 0},
    )


@pytest.mark.parametrize(
    ("mode", "store", "concurrent", "max_mismatch"),
    [
        ("ordered", False, False, 0.05),
        ("weighted", True, False, 0.05),
        ("best", True, True, 0.05),
        ("weighted", False, True, 0.9),  # never rolled back: every request is compared
        ("ordered", True, True, 0.9),
    ],
)
async def test_a_rollout_never_hands_a_client_the_candidates_differing_zip(
    tmp_path: Path, mode: str, store: bool, concurrent: bool, max_mismatch: float
) -> None:
    """The acceptance scenario: sample 1.0, a candidate serving other bytes for a fifth of
    the zips, 40 zips of distinct versions per run (sequential, or all at once with their
    .mod like the go command): 200 zips over the runs, not one differing answer."""
    mods = [simple_module("example.com/many", f"v1.0.{i}") for i in range(40)]
    cand_mods = [_tampered(m) if i % 5 == 2 else m for i, m in enumerate(mods)]
    cache: dict[str, Any] = {"memory": "16MiB"}
    if store:
        cache["dir"] = str(tmp_path / "store")
    async with (
        FixtureProxy(ModuleSet(cand_mods), name="cand") as cand,
        FixtureProxy(ModuleSet(mods), name="base") as base,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "cand", "url": cand.url}, {"name": "base", "url": base.url}],
            {"main": {"upstreams": ["cand", "base"], "mode": mode}},
            default={"pool": "main"},
            rollouts=[
                {"upstream": "cand", "compare_with": "base", "sample": 1.0},
            ]
            if max_mismatch == 0.05
            else [
                {
                    "upstream": "cand",
                    "compare_with": "base",
                    "sample": 1.0,
                    "max_mismatch": max_mismatch,
                }
            ],
            cache=cache,
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:

            async def fetch(m: FixtureModule) -> tuple[int, bytes]:
                async with http.get(f"{gw.url}{m.url_path('mod')}") as resp:
                    await resp.read()
                async with http.get(f"{gw.url}{m.url_path('zip')}") as resp:
                    return resp.status, await resp.read()

            if concurrent:
                got = await asyncio.gather(*(fetch(m) for m in mods))
            else:
                got = [await fetch(m) for m in mods]
            wrong = [
                m.version for m, (s, b) in zip(mods, got, strict=True) if b != module_zip_bytes(m)
            ]
            assert [s for s, _ in got] == [200] * 40
            assert wrong == []


async def test_a_rollout_differing_on_a_fifth_of_zips_is_rolled_back_clients_get_baseline(
    tmp_path: Path,
) -> None:
    mods = [simple_module(f"example.com/ab{i}", "v1.0.0") for i in range(10)]
    cand_mods = [_tampered(m) if i % 5 == 2 else m for i, m in enumerate(mods)]  # 20 % differ
    async with (
        FixtureProxy(ModuleSet(cand_mods), name="cand") as cand,
        FixtureProxy(ModuleSet(mods), name="base") as base,
    ):
        rules = _rollout_rules(tmp_path, cand.url, base.url, window="30s")
        async with gateway_in_process(rules) as gw:
            served_by = []
            for m in mods:
                status, body, headers = await _get(f"{gw.url}{m.url_path('zip')}")
                assert status == 200
                assert body == module_zip_bytes(m)  # always the baseline's bytes
                served_by.append(headers["X-Router-Upstream"])
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            (rollout,) = view["rollouts"]
            assert rollout["state"] == "rolled_back"
            assert rollout["mismatches_total"] >= 1
            state = await _metric(
                gw.url, "goproxy_router_rollout_state", upstream="cand", state="rolled_back"
            )
            assert state == 1
            # rolled back at the first mismatch (module 2): from then on only the baseline
            assert served_by[3:] == ["base"] * 7
            assert cand.count("example.com/ab9") == 0

            # goproxy-router rollout reset cand: compared again
            done = await _reset_rollout("cand", "--rules", str(rules), "--gateway", gw.url)
            assert done.returncode == 0, done.stderr
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert view["rollouts"][0]["state"] == "comparing"
            status, body, headers = await _get(f"{gw.url}{mods[9].url_path('zip')}")
            assert (status, body, headers["X-Router-Upstream"]) == (
                200,
                module_zip_bytes(mods[9]),
                "cand",
            )


async def test_a_matching_rollout_turns_healthy_and_compares_info_by_version_and_time(
    tmp_path: Path,
) -> None:
    mods = [simple_module(f"example.com/same{i}", "v1.0.0") for i in range(3)]
    async with (
        FixtureProxy(ModuleSet(mods), name="cand") as cand,
        FixtureProxy(ModuleSet(mods), name="base") as base,
    ):
        # the candidate adds a field to .info: not a difference the go command sees
        cand.add_fault(
            Fault(
                pattern=r"same0/@v/v1\.0\.0\.info",
                body=b'{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z","Origin":{"VCS":"git"}}',
                content_type="application/json",
            )
        )
        base.add_fault(
            Fault(
                pattern=r"same0/@v/v1\.0\.0\.info",
                body=b'{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}',
                content_type="application/json",
            )
        )
        rules = _rollout_rules(tmp_path, cand.url, base.url, window="1s")
        async with gateway_in_process(rules) as gw:
            for m in mods:
                for kind in ("info", "mod", "zip"):
                    status, _, headers = await _get(f"{gw.url}{m.url_path(kind)}")
                    assert status == 200
                    assert headers["X-Router-Upstream"] == "cand"
            await asyncio.sleep(1.1)
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            (rollout,) = view["rollouts"]
            assert rollout["mismatches_total"] == 0 and rollout["compared_total"] == 9
            assert rollout["state"] == "healthy"
            # the metric follows with time alone: no comparison happened since the window
            for _ in range(30):
                healthy = await _metric(
                    gw.url, "goproxy_router_rollout_state", upstream="cand", state="healthy"
                )
                if healthy == 1:
                    break
                await asyncio.sleep(0.1)
            assert healthy == 1


async def test_a_comparison_whose_baseline_failed_asks_it_again_and_serves_only_its_answer(
    tmp_path: Path,
) -> None:
    m = simple_module("example.com/retry", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([_tampered(m)]), name="cand") as cand,
        FixtureProxy(ModuleSet([m]), name="base") as base,
    ):
        base.add_fault(Fault(pattern=r"\.zip$", status=503, times=2))
        rules = _rollout_rules(tmp_path, cand.url, base.url)
        async with gateway_in_process(rules) as gw:
            status, body, headers = await _get(f"{gw.url}{m.url_path('zip')}")
            # the baseline is asked again (0.2 s, 0.4 s later) before anything is served:
            # the candidate's differing zip never reaches the client
            assert (status, headers["X-Router-Upstream"]) == (200, "base")
            assert body == module_zip_bytes(m)
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert view["rollouts"][0]["state"] == "rolled_back"
            assert base.count(".zip") == 3  # the first ask, a failed retry, a good retry


async def test_a_candidate_the_baseline_cannot_vouch_for_is_never_served(tmp_path: Path) -> None:
    m = simple_module("example.com/unvouched", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([_tampered(m)]), name="cand") as cand,
        FixtureProxy(ModuleSet([m]), name="base") as base,
    ):
        base.add_fault(Fault(pattern=r"\.(zip|mod)$", status=503))
        rules = _rollout_rules(tmp_path, cand.url, base.url)
        async with gateway_in_process(rules) as gw:
            for kind in ("mod", "zip"):
                status, body, headers = await _get(f"{gw.url}{m.url_path(kind)}")
                assert status == 502, body
                assert headers["X-Router-Upstream"] == "base"
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert view["rollouts"][0]["unresolved_total"] == 2
            assert view["rollouts"][0]["state"] != "rolled_back"


async def test_a_rollback_drops_what_the_candidate_served_from_the_cache(tmp_path: Path) -> None:
    good, bad = (simple_module(f"example.com/cached{i}", "v1.0.0") for i in range(2))
    async with (
        FixtureProxy(ModuleSet([good, _tampered(bad)]), name="cand") as cand,
        FixtureProxy(ModuleSet([good, bad]), name="base") as base,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "cand", "url": cand.url}, {"name": "base", "url": base.url}],
            {"main": {"upstreams": ["cand", "base"], "mode": "ordered"}},
            default={"pool": "main"},
            rollouts=[{"upstream": "cand", "compare_with": "base", "sample": 1.0}],
            cache={"memory": "16MiB", "dir": str(tmp_path / "store")},
        )
        async with gateway_in_process(rules) as gw:
            for kind in ("mod", "zip"):
                _, _, headers = await _get(f"{gw.url}{good.url_path(kind)}")
                assert headers["X-Router-Upstream"] == "cand"
                _, _, headers = await _get(f"{gw.url}{good.url_path(kind)}")
                assert headers["X-Router-Upstream"] == "cache"
            status, body, _ = await _get(f"{gw.url}{bad.url_path('zip')}")
            assert (status, body) == (200, module_zip_bytes(bad))
            for kind in ("mod", "zip"):  # what the candidate served is gone from the cache
                _, _, headers = await _get(f"{gw.url}{good.url_path(kind)}")
                assert headers["X-Router-Upstream"] == "base"


async def test_a_go_client_with_gosumdb_off_still_gets_only_true_modules(
    tmp_path: Path, gocache: Path
) -> None:
    lib = simple_module("example.com/guarded", "v1.1.0")
    db = TestSumDB(DB)
    db.add_module(lib)
    async with (
        FixtureProxy(ModuleSet([_tampered(lib)]), name="bad") as bad,
        FixtureProxy(ModuleSet([lib]), name="good") as good,
        db,
    ):
        rules = _bad_then_good(
            tmp_path,
            bad,
            good,
            routes=VERIFY_EXAMPLE_COM,
            checksum_dbs=[_db_cfg(db)],
        )
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gosumdb="off", gocache=gocache)
            done = await run_go(
                ["mod", "download", "-json", f"{lib.path}@{lib.version}"], tmp_path, env
            )
            assert done.check().json_objects()[0]["Sum"] == hash_module(lib)
            assert bad.count(".zip") == 1  # it was asked, and refused


async def test_gos_own_test_key_and_a_db_name_with_a_path(tmp_path: Path, gocache: Path) -> None:
    from support.sumdb_server import GO_TEST_SKEY, GO_TEST_VKEY

    lib = simple_module("example.com/gotestkey", "v1.0.0")
    db = TestSumDB("localhost.localdev/sumdb", GO_TEST_SKEY)
    db.add_module(lib)
    async with (
        FixtureProxy(ModuleSet([_tampered(lib)]), name="bad") as bad,
        FixtureProxy(ModuleSet([lib]), name="good") as good,
        db,
    ):
        rules = _bad_then_good(
            tmp_path,
            bad,
            good,
            routes=VERIFY_EXAMPLE_COM,
            checksum_dbs=[{"name": "localhost.localdev/sumdb", "key": GO_TEST_VKEY, "url": db.url}],
        )
        async with gateway_in_process(rules) as gw:
            status, body, _ = await _get(f"{gw.url}{lib.url_path('zip')}")
            assert (status, body) == (200, module_zip_bytes(lib))
            # the go command finds the DB through the gateway under its path name
            supported = f"{gw.url}/sumdb/localhost.localdev/sumdb/supported"
            assert (await _get(supported))[0] == 200
            env = go_env(tmp_path, gw.url, gosumdb=GO_TEST_VKEY, gocache=gocache)
            done = await run_go(
                ["mod", "download", "-json", f"{lib.path}@{lib.version}"], tmp_path, env
            )
            assert done.check().json_objects()[0]["Sum"] == hash_module(lib)
            assert db.requests_for("/lookup/")


async def test_a_compared_request_still_reaches_a_third_upstream(tmp_path: Path) -> None:
    only_third = simple_module("example.com/thirdonly", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([]), name="cand") as cand,
        FixtureProxy(ModuleSet([]), name="base") as base,
        FixtureProxy(ModuleSet([only_third]), name="third") as third,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "cand", "url": cand.url},
                {"name": "base", "url": base.url},
                {"name": "third", "url": third.url},
            ],
            {"main": {"upstreams": ["cand", "base", "third"], "mode": "ordered"}},
            default={"pool": "main"},
            rollouts=[{"upstream": "cand", "compare_with": "base", "sample": 1.0}],
            cache={"memory": 0},
        )
        async with gateway_in_process(rules) as gw:
            for kind in ("info", "zip"):
                status, _, headers = await _get(f"{gw.url}{only_third.url_path(kind)}")
                assert (status, headers["X-Router-Upstream"]) == (200, "third")
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert view["rollouts"][0]["mismatches_total"] == 0  # both said not found: agree


async def test_rollbacks_and_resets_reach_every_replica_through_redis(
    tmp_path: Path, redis_server: Any
) -> None:
    bad = simple_module("example.com/replicated", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([_tampered(bad)]), name="cand") as cand,
        FixtureProxy(ModuleSet([bad]), name="base") as base,
    ):
        rules = _rollout_rules(tmp_path, cand.url, base.url)
        async with (
            gateway_in_process(rules, redis_url=redis_server.url) as one,
            gateway_in_process(rules, redis_url=redis_server.url) as two,
        ):

            async def states() -> list[str]:
                views = [
                    json.loads((await _get(g.url + "/debug/upstreams"))[1]) for g in (one, two)
                ]
                return [v["upstreams"]["cand"]["rollout"]["state"] for v in views]

            status, body, _ = await _get(f"{one.url}{bad.url_path('zip')}")
            assert (status, body) == (200, module_zip_bytes(bad))
            for _ in range(50):
                if await states() == ["rolled_back", "rolled_back"]:
                    break
                await asyncio.sleep(0.1)
            assert await states() == ["rolled_back", "rolled_back"]
            done = await _reset_rollout("cand", "--rules", str(rules), "--redis", redis_server.url)
            assert done.returncode == 0, done.stderr
            for _ in range(50):
                if await states() == ["comparing", "comparing"]:
                    break
                await asyncio.sleep(0.1)
            assert await states() == ["comparing", "comparing"]


async def test_a_fake_tile_from_a_mirror_is_refused_and_never_cached(tmp_path: Path) -> None:
    mods = [simple_module(f"example.com/tile{i}", "v1.0.0") for i in range(3)]
    honest = TestSumDB(DB, base_path=f"/sumdb/{DB}")
    for m in mods:
        honest.add_module(m)
    async with honest, FixtureProxy(ModuleSet([]), name="liar", sumdb=[DB]) as liar:
        tile = f"/sumdb/{DB}/tile/8/0/000.p/3"
        liar.sumdb_responses[tile] = bytes(32 * 3)  # zeros: no such tree
        strip = len(honest.base_path)
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "liar", "url": liar.url, "sumdb": [DB]},
                {"name": "honest", "url": honest.url[:-strip], "sumdb": [DB]},
            ],
            {"main": {"upstreams": ["liar", "honest"], "mode": "ordered"}},
            checksum_dbs=[{"name": DB, "key": honest.verifier_key}],
        )
        async with gateway_in_process(rules) as gw:
            # the gateway knows the tree: a lookup proved it
            m = mods[0]
            status, _, _ = await _get(f"{gw.url}/sumdb/{DB}/lookup/{m.path}@{m.version}")
            assert status == 200
            for _ in range(2):
                status, body, headers = await _get(gw.url + tile)
                assert status == 200
                assert body == await _tile_of(honest, tile)
                assert headers["X-Router-Upstream"] in ("honest", "cache")
            assert (
                await _metric(
                    gw.url, "goproxy_router_sumdb_inconsistent_total", sumdb=DB, reason="proof"
                )
                == 1
            )
            # HEAD answers have no body to check: no ejection, no alarm
            async with (
                aiohttp.ClientSession() as http,
                http.head(f"{gw.url}/sumdb/{DB}/latest") as resp,
            ):
                assert resp.status == 200
            view = json.loads((await _get(gw.url + "/debug/upstreams"))[1])
            assert list(view["checksum_dbs"][DB]["ejected"]) == ["liar"]


async def _tile_of(db: TestSumDB, path: str) -> bytes:
    return db.answer(path[len(db.base_path) :]).body


async def test_a_broken_zip_before_the_good_one_is_a_mismatch_not_an_error(tmp_path: Path) -> None:
    lib = simple_module("example.com/brokenzip", "v1.0.0")
    db = TestSumDB(DB)
    db.add_module(lib)
    async with (
        FixtureProxy(ModuleSet([lib]), name="bad") as bad,
        FixtureProxy(ModuleSet([lib]), name="good") as good,
        db,
    ):
        bad.add_fault(Fault(pattern=r"\.zip$", body=b"PK\x03\x04 not really a zip"))
        rules = _bad_then_good(
            tmp_path,
            bad,
            good,
            tenants=_tenants("main", "main"),
            checksum_dbs=[_db_cfg(db)],
            cache={"memory": "16MiB", "dir": str(tmp_path / "store")},
        )
        async with gateway_in_process(rules) as gw:
            status, body, headers = await _get(f"{gw.url}{lib.url_path('zip')}", tenant="devops")
            assert (status, body) == (200, module_zip_bytes(lib))
            assert headers["X-Router-Upstream"] == "good"
            assert await _metric(gw.url, "goproxy_router_checksum_mismatches_total") == 1
            assert not list((tmp_path / "store" / "tmp").iterdir())


async def test_a_compared_zip_that_is_no_module_zip_is_never_kept(tmp_path: Path) -> None:
    m = simple_module("example.com/htmlzip", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([m]), name="cand") as cand,
        FixtureProxy(ModuleSet([m]), name="base") as base,
    ):
        cand.add_fault(
            Fault(pattern=r"\.zip$", body=b"<html>oops</html>", content_type="text/html")
        )
        base.add_fault(Fault(pattern=r"\.zip$", status=503))  # nobody vouches for it
        rules = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "cand", "url": cand.url}, {"name": "base", "url": base.url}],
            {"main": {"upstreams": ["cand", "base"], "mode": "ordered"}},
            default={"pool": "main"},
            rollouts=[{"upstream": "cand", "compare_with": "base", "sample": 1.0}],
            cache={"memory": "16MiB", "dir": str(tmp_path / "store")},
        )
        async with gateway_in_process(rules) as gw:
            status, body, _ = await _get(f"{gw.url}{m.url_path('zip')}")
            assert status == 502 and b"oops" not in body
            assert not list((tmp_path / "store" / "index").iterdir())


async def test_a_private_module_is_never_compared_with_a_public_baseline(tmp_path: Path) -> None:
    corp = simple_module("corp.example.com/secret", "v1.0.0")
    async with (
        FixtureProxy(ModuleSet([corp]), name="cand") as cand,
        FixtureProxy(ModuleSet([corp]), name="official") as official,
    ):
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "cand", "url": cand.url, "public": False},
                {"name": "official", "url": official.url},
            ],
            {"main": {"upstreams": ["cand", "official"], "mode": "ordered"}},
            tenants=[{"id": "corp", "pool": "main", "private": ["corp.example.com/*"]}],
            rollouts=[{"upstream": "cand", "compare_with": "official", "sample": 1.0}],
            cache={"memory": 0},
        )
        async with gateway_in_process(rules) as gw:
            for kind in ("info", "zip"):
                status, _, headers = await _get(f"{gw.url}{corp.url_path(kind)}", tenant="corp")
                assert (status, headers["X-Router-Upstream"]) == (200, "cand")
            assert official.requests == []
