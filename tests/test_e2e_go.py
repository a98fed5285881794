"""The real go command through the gateway: downloads, builds, go.sum, errors, HTTPS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from support.gateway import gateway_in_process, one_pool_rules, write_rules
from support.gocmd import go_env, run_go, write_main_module
from support.gomod import (
    FixtureModule,
    ModuleSet,
    gosum_lines,
    hash_mod,
    hash_module,
    simple_module,
)
from support.goproxy_server import FixtureProxy

pytestmark = pytest.mark.e2e


def _corpus() -> tuple[list[FixtureModule], list[FixtureModule], list[FixtureModule]]:
    """(served by upstream a, served only by upstream b, what main requires)."""
    multi_old = [simple_module("example.com/multi/v2", f"v2.{i}.0") for i in range(3)]
    multi = simple_module("example.com/multi/v2", "v2.3.0")
    upper_old = [simple_module("example.com/Upper/Mod", f"v1.{i}.0") for i in range(4)]
    upper = simple_module("example.com/Upper/Mod", "v1.4.0", deps=[multi])
    lib_old = [simple_module("example.com/lib", f"v0.{i}.0") for i in range(1, 6)]
    lib = simple_module("example.com/lib", "v0.6.0")
    legacy = simple_module("example.com/legacy", "v2.0.0+incompatible")
    pre_old = simple_module("example.com/pre", "v1.2.0")
    pre = simple_module("example.com/pre", "v1.3.0-rc.1")
    retracted = simple_module("example.com/retract", "v1.0.0")
    retracting = simple_module("example.com/retract", "v1.1.0", retract=["v1.0.0 // broken"])
    # only on the second upstream:
    pseudo = simple_module("example.com/pseudo", "v0.0.0-20240102030405-abcdef123456")
    gopkg_old = simple_module("gopkg.in/fixture.v3", "v3.0.0")
    gopkg = simple_module("gopkg.in/fixture.v3", "v3.0.1")
    caps = simple_module("example.com/CAPS/Only/On/B", "v1.0.0")
    on_a = [
        *multi_old,
        multi,
        *upper_old,
        upper,
        *lib_old,
        lib,
        legacy,
        pre_old,
        pre,
        retracted,
        retracting,
    ]
    only_b = [pseudo, gopkg_old, gopkg, caps]
    required = [multi, upper, lib, legacy, pre, retracting, pseudo, gopkg, caps]
    return on_a, only_b, required


async def test_go_downloads_and_builds_through_two_upstreams(tmp_path: Path, gocache: Path) -> None:
    on_a, only_b, required = _corpus()
    assert len(on_a) + len(only_b) >= 20
    a = FixtureProxy(ModuleSet(on_a), name="a")
    b = FixtureProxy(ModuleSet([*on_a[:3], *only_b]), name="b")
    async with a, b:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"a": a.url, "b": b.url})
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gocache=gocache)
            main = write_main_module(tmp_path / "main", "example.com/main", required)
            download = (await run_go(["mod", "download", "-json", "all"], main, env)).check()
            by_key = {(r["Path"], r["Version"]): r for r in download.json_objects()}
            for m in required:
                report = by_key[m.key]
                assert "Error" not in report, report
                assert (report["Sum"], report["GoModSum"]) == (hash_module(m), hash_mod(m.mod))
            expected = sorted(line for m in required for line in gosum_lines(m))
            assert sorted((main / "go.sum").read_text().splitlines()) == expected

            (await run_go(["build", "-o", str(tmp_path / "hello"), "."], main, env)).check()
            proc = await asyncio.create_subprocess_exec(
                str(tmp_path / "hello"), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert all(f"{m.path}@{m.version}" in out.decode() for m in required)

            listed = await run_go(
                [
                    "list",
                    "-m",
                    "-versions",
                    "example.com/lib",
                    "example.com/pre",
                    "example.com/retract",
                    "gopkg.in/fixture.v3",
                ],
                main,
                env,
            )
            assert listed.check().stdout.splitlines() == [
                "example.com/lib v0.1.0 v0.2.0 v0.3.0 v0.4.0 v0.5.0 v0.6.0",
                "example.com/pre v1.2.0 v1.3.0-rc.1",
                "example.com/retract v1.1.0",
                "gopkg.in/fixture.v3 v3.0.0 v3.0.1",
            ]
    # the first upstream served everything it has; the second only what the first lacks
    assert b.count("example.com/lib") == 0
    assert a.count("/gopkg.in/fixture.v3/@v/v3.0.1.zip") == 1
    assert b.count("/gopkg.in/fixture.v3/@v/v3.0.1.zip") == 1
    assert not [r for r in a.requests + b.requests if "!" in r.path]


async def test_go_reports_not_found_like_a_direct_proxy(tmp_path: Path, gocache: Path) -> None:
    a = FixtureProxy(ModuleSet([simple_module("example.com/lib", "v0.1.0")]), name="a")
    async with a:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"a": a.url})
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gocache=gocache)
            missing = await run_go(["mod", "download", "example.com/missing@v1.0.0"], tmp_path, env)
            assert missing.returncode != 0
            assert "404 Not Found" in missing.stderr
            bad = await run_go(["mod", "download", "example.com/lib@v9.9.9"], tmp_path, env)
            assert bad.returncode != 0
            assert "example.com/lib@v9.9.9" in bad.stderr


async def test_go_over_https_with_a_test_ca(tmp_path: Path, gocache: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    lib = simple_module("example.com/lib", "v0.1.0")
    async with FixtureProxy(ModuleSet([lib]), name="a") as a:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"a": a.url})
        async with gateway_in_process(rules, ssl_context=ctx) as gw:
            assert gw.url.startswith("https://")
            env = go_env(tmp_path, gw.url, gocache=gocache, ssl_cert_file=ca_file)
            done = await run_go(
                ["mod", "download", "-json", "example.com/lib@v0.1.0"], tmp_path, env
            )
            report = done.check().json_objects()[0]
            assert report["Sum"] == hash_module(lib)


async def test_go_verifies_against_a_checksum_db_proxied_by_the_gateway(
    tmp_path: Path, gocache: Path
) -> None:
    from support.sumdb_server import TestSumDB

    lib = simple_module("example.com/verified", "v1.0.0")
    tampered_zip = simple_module(
        "example.com/verified", "v1.0.0", extra_files={"evil.go": b"package verified\n"}
    )
    db = TestSumDB("sum.test.example", base_path="/sumdb/sum.test.example")
    db.add_module(lib)
    async with FixtureProxy(ModuleSet([lib]), name="mods") as mods, db:
        sumdb_root = db.url[: -len(db.base_path)]
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "mods", "url": mods.url},
                {"name": "sumdb-mirror", "url": sumdb_root, "sumdb": ["sum.test.example"]},
            ],
            {"main": {"upstreams": ["mods", "sumdb-mirror"], "mode": "ordered"}},
            default={"pool": "main"},
            cache={"memory": 0},  # so the tampered zip below really reaches the client
        )
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gosumdb=db.verifier_key, gocache=gocache)
            ok = await run_go(
                ["mod", "download", "-json", "example.com/verified@v1.0.0"], tmp_path, env
            )
            assert ok.check().json_objects()[0]["Sum"] == hash_module(lib)
            # the go command found the database through the gateway and fetched it there
            assert db.requests_for("/lookup/example.com/verified@v1.0.0")
            assert db.requests_for("/tile/")
            # a mirror serving other bytes is caught by the go command
            mods.modules.remove(lib.path, lib.version)
            mods.modules.add(tampered_zip)
            env2 = go_env(tmp_path / "second", gw.url, gosumdb=db.verifier_key, gocache=gocache)
            bad = await run_go(["mod", "download", "example.com/verified@v1.0.0"], tmp_path, env2)
            assert bad.returncode != 0
            assert "SECURITY ERROR" in bad.stderr or "checksum mismatch" in bad.stderr


async def test_go_builds_the_awkward_corpus_verified_by_the_gateway(
    tmp_path: Path, gocache: Path
) -> None:
    """Upper-case paths, /v2, +incompatible, pseudo-versions, gopkg.in, prereleases and
    retractions, every .mod and .zip checked by the gateway against a checksum DB that the
    go command also uses through the gateway."""
    from support.sumdb_server import GO_TEST_SKEY, GO_TEST_VKEY, TestSumDB

    on_a, only_b, required = _corpus()
    db = TestSumDB("localhost.localdev/sumdb", GO_TEST_SKEY)
    for m in [*on_a, *only_b]:
        db.add_module(m)
    a = FixtureProxy(ModuleSet(on_a), name="a")
    b = FixtureProxy(ModuleSet([*on_a[:3], *only_b]), name="b")
    async with a, b, db:
        rules = one_pool_rules(
            tmp_path / "rules.yaml",
            {"a": a.url, "b": b.url},
            routes=[
                {
                    "name": "all",
                    "match": {"module": ["*"]},
                    "pool": "main",
                    "verify_checksums": True,
                }
            ],
            checksum_dbs=[{"name": "localhost.localdev/sumdb", "key": GO_TEST_VKEY, "url": db.url}],
            cache={"memory": "64MiB"},
        )
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gosumdb=GO_TEST_VKEY, gocache=gocache)
            main = write_main_module(tmp_path / "main", "example.com/main", required)
            (await run_go(["mod", "download", "-json", "all"], main, env)).check()
            expected = sorted(line for m in required for line in gosum_lines(m))
            assert sorted((main / "go.sum").read_text().splitlines()) == expected
            (await run_go(["build", "-o", str(tmp_path / "hello"), "."], main, env)).check()
            for m in required:  # the gateway looked every one up
                assert db.requests_for(f"/lookup/{m.escaped_path}@"), m.path
