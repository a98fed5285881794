"""Prove the test-support library right before any gateway test relies on it.

Hashes are checked against the Go team's vectors, the fixture proxy against real HTTP clients,
and the whole chain (zips, hashes, escaping, the proxy) against the real go command.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.error
import urllib.request
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import yarl
from support.gocmd import go_env, run_go, write_main_module
from support.gomod import (
    FixtureModule,
    ModuleSet,
    escape_path,
    escape_version,
    gosum_lines,
    hash1,
    hash_mod,
    hash_module,
    hash_zip,
    info_json,
    large_module,
    module_zip_bytes,
    simple_module,
    unescape_path,
    unescape_version,
    write_zip,
)
from support.goproxy_server import Fault, FixtureProxy

# ------------------------------------------------------------------------------------- hashes


def _zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_hash1_matches_dirhash_vectors() -> None:
    files = {name: b"data for " + name.encode() for name in ("xyz", "abc")}
    assert hash1(files) == "h1:EP6WfDoQTSk9klnxcjriWJOGztueJUywHNmWeq+efB8="
    assert hash1({}) == "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_hash1_rejects_names_with_newlines() -> None:
    with pytest.raises(ValueError, match="newline"):
        hash1({"xyz": b"", "a\nbc": b""})


def test_hash_zip_matches_dirhash_vector_and_counts_directory_entries() -> None:
    entries = {f"prefix/{n}": b"data for " + n.encode() for n in ("xyz", "abc")}
    assert hash_zip(_zip_of(entries)) == "h1:rLyfpGMAgqOnGE2aKOY5Xb6cOc0/YQhPjHBHBwkblhs="
    with_dir = _zip_of({"prefix/": b"", **entries})
    with pytest.raises(ValueError):
        hash_zip(with_dir)
    assert (
        hash_zip(with_dir, prefix_check=False) == "h1:5mobUXqB9Fl/FZPsMCZ2Td+kHBYl4Vr4yqH6IJuViqk="
    )


def test_hash_mod_matches_real_gosum_line_for_rsc_io_quote() -> None:
    mod = b'module "rsc.io/quote"\n\nrequire "rsc.io/sampler" v1.3.0\n'
    assert hash_mod(mod) == "h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0="


def test_module_zip_is_deterministic_prefixed_and_hashes_like_the_files() -> None:
    m = simple_module("example.com/Upper/Thing", "v1.2.3", extra_files={"sub/data.txt": b"x"})
    data = module_zip_bytes(m)
    assert data == module_zip_bytes(m)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert all(n.startswith("example.com/Upper/Thing@v1.2.3/") for n in names)
    assert not any(n.endswith("/") for n in names)
    assert hash_zip(data) == hash_module(m)
    assert gosum_lines(m) == [
        f"example.com/Upper/Thing v1.2.3 {hash_module(m)}",
        f"example.com/Upper/Thing v1.2.3/go.mod {hash_mod(m.mod)}",
    ]


def test_incompatible_module_has_no_go_mod_and_a_synthesized_mod_answer() -> None:
    m = simple_module("example.com/legacy", "v2.0.0+incompatible")
    assert "go.mod" not in m.files
    assert m.mod == b"module example.com/legacy\n"


def test_large_module_is_about_the_requested_size_and_streams_to_disk(tmp_path: Path) -> None:
    m = large_module("example.com/big", "v1.0.0", 3_000_000, seed=7)
    assert m.is_large
    path = write_zip(m, tmp_path / "big.zip")
    assert abs(path.stat().st_size - 3_000_000) < 200
    assert hash_zip(path) == hash_module(m)
    assert module_zip_bytes(m) == path.read_bytes()


# ----------------------------------------------------------------------- escaping and versions


@pytest.mark.parametrize(
    ("real", "escaped"),
    [
        ("github.com/GoogleCloudPlatform/omega", "github.com/!google!cloud!platform/omega"),
        ("rsc.io/QUOTE", "rsc.io/!q!u!o!t!e"),
        ("ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789", None),
    ],
)
def test_escape_path_round_trips_go_vectors(real: str, escaped: str | None) -> None:
    assert escape_path(real) == (escaped or real)
    assert unescape_path(escaped or real) == real


@pytest.mark.parametrize(
    "bad",
    [
        "github.com/GoogleCloudPlatform/omega",
        "github.com/!google!cloud!platform!/omega",
        "github.com/!0google!cloud!platform/omega",
        "github.com/!_google!cloud!platform/omega",
        "github.com/!!google!cloud!platform/omega",
        "",
    ],
)
def test_unescape_path_rejects_go_bad_vectors(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_path(bad)


def test_escape_version_vectors() -> None:
    assert escape_version("v1.5.3-PRE") == "v1.5.3-!p!r!e"
    assert unescape_version("v2.0.0+incompatible") == "v2.0.0+incompatible"
    for bad in ("v1.0.0-!", "v1.0.0-PRE"):
        with pytest.raises(ValueError):
            unescape_version(bad)


def test_module_set_lists_tags_in_semver_order_and_picks_latest_like_go() -> None:
    versions = ["v1.10.0", "v1.2.0", "v1.3.0-rc.10", "v1.3.0-rc.2", "v0.0.0-20240102030405-abc"]
    ms = ModuleSet(simple_module("example.com/x", v) for v in versions)
    assert ms.versions("example.com/x") == ["v1.2.0", "v1.3.0-rc.2", "v1.3.0-rc.10", "v1.10.0"]
    assert ms.latest("example.com/x") == ms.get("example.com/x", "v1.10.0")
    pre = ModuleSet(simple_module("example.com/p", v) for v in ["v1.0.0-beta", "v1.0.0-alpha"])
    assert ms.latest("example.com/nope") is None
    assert pre.latest("example.com/p") == pre.get("example.com/p", "v1.0.0-beta")
    pseudo = ModuleSet(
        [
            simple_module("example.com/q", "v0.0.0-20240102030405-abcdef123456"),
            simple_module("example.com/q", "v0.0.0-20230102030405-abcdef123456"),
        ]
    )
    assert pseudo.versions("example.com/q") == []
    latest = pseudo.latest("example.com/q")
    assert latest is not None
    assert json.loads(info_json(latest)) == {
        "Version": "v0.0.0-20240102030405-abcdef123456",
        "Time": "2024-01-02T03:04:05Z",
    }


def test_pseudo_version_time_must_match_its_timestamp() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        FixtureModule(
            path="example.com/q",
            version="v0.0.0-20240102030405-abcdef123456",
            files={"go.mod": b"module example.com/q\n"},
            time=datetime(2020, 1, 1, tzinfo=UTC),
        )


# ---------------------------------------------------------------------------- fixture proxy

UPPER = simple_module("example.com/Upper/Mod", "v1.0.0")
PSEUDO_ONLY = simple_module("example.com/pseudo", "v0.0.0-20240102030405-abcdef123456")


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with session.get(yarl.URL(url, encoded=True), allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_proxy_serves_every_endpoint_with_go_escaping() -> None:
    async with FixtureProxy([UPPER, PSEUDO_ONLY]) as proxy, aiohttp.ClientSession() as s:
        base = proxy.url + "/example.com/%21upper/%21mod"
        assert await _get(s, base + "/@v/list") == (200, "text/plain; charset=utf-8", b"v1.0.0\n")
        assert await _get(s, base + "/@v/v1.0.0.info") == (
            200,
            "application/json",
            info_json(UPPER),
        )
        assert await _get(s, proxy.url + "/example.com/!upper/!mod/@v/v1.0.0.mod") == (
            200,
            "text/plain; charset=utf-8",
            UPPER.mod,
        )
        status, ctype, body = await _get(s, base + "/@v/v1.0.0.zip")
        assert (status, ctype, hash_zip(body)) == (200, "application/zip", hash_module(UPPER))
        assert (await _get(s, base + "/@latest"))[2] == info_json(UPPER)
        assert await _get(s, proxy.url + "/example.com/pseudo/@v/list") == (
            200,
            "text/plain; charset=utf-8",
            b"",
        )
        for missing in (
            "/example.com/Upper/Mod/@v/list",
            "/example.com/nope/@v/list",
            "/x/@v/v9.info",
        ):
            status, ctype, body = await _get(s, proxy.url + missing)
            assert (status, ctype) == (404, "text/plain; charset=utf-8")
            assert body.count(b"\n") == 1
    assert proxy.count("!upper") == 5
    assert proxy.requests[0].path == "/example.com/%21upper/%21mod/@v/list"


async def test_proxy_faults_status_body_redirect_delay_and_times() -> None:
    async with FixtureProxy([UPPER]) as proxy, aiohttp.ClientSession() as s:
        info = proxy.url + UPPER.url_path("info")
        proxy.add_fault(Fault(pattern=r"\.info$", status=503, times=1))
        assert (await _get(s, info))[0] == 503
        assert (await _get(s, info))[0] == 200
        proxy.add_fault(Fault(body=b"not json", content_type="text/html"))
        assert await _get(s, info) == (200, "text/html", b"not json")
        proxy.clear_faults()
        proxy.add_fault(Fault(pattern="info", redirect_to=proxy.url + "/elsewhere{path}"))
        status, _, _ = await _get(s, info)
        assert status == 302
        proxy.clear_faults()
        proxy.add_fault(Fault(delay=0.3))
        started = time.monotonic()
        assert (await _get(s, info))[0] == 200
        assert time.monotonic() - started >= 0.3


async def test_proxy_faults_break_connections() -> None:
    async with FixtureProxy([UPPER]) as proxy:
        zip_url = proxy.url + UPPER.url_path("zip")
        # No ``times``: aiohttp's client silently retries a GET once after a reset.
        proxy.add_fault(Fault(reset=True))
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientOSError):
                await _get(s, zip_url)
        proxy.clear_faults()
        proxy.add_fault(Fault(truncate_at=100, times=1))
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                await _get(s, zip_url)
        proxy.add_fault(Fault(stall_after=10, stall=5.0, times=1))
        timeout = aiohttp.ClientTimeout(sock_read=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.get(zip_url) as resp:
                assert resp.content_length == len(module_zip_bytes(UPPER))
                assert len(await resp.content.readexactly(10)) == 10
                with pytest.raises(asyncio.TimeoutError):
                    await resp.read()
            assert (await _get(s, zip_url))[0] == 200


async def test_proxy_streams_large_zips_from_disk() -> None:
    big = large_module("example.com/big", "v1.0.0", 2_000_000)
    async with FixtureProxy([big]) as proxy, aiohttp.ClientSession() as s:
        status, ctype, body = await _get(s, proxy.url + big.url_path("zip"))
    assert (status, ctype, len(body)) == (200, "application/zip", len(module_zip_bytes(big)))
    assert hash_zip(body) == hash_module(big)


async def test_proxy_sumdb_support_and_canned_answers() -> None:
    async with FixtureProxy([], sumdb=["sum.golang.org"]) as proxy, aiohttp.ClientSession() as s:
        proxy.sumdb_responses["/sumdb/sum.golang.org/lookup/rsc.io/quote@v1.5.2"] = b"canned\n"
        assert (await _get(s, proxy.url + "/sumdb/sum.golang.org/supported"))[0] == 200
        assert (await _get(s, proxy.url + "/sumdb/other.example/supported"))[0] == 404
        got = await _get(s, proxy.url + "/sumdb/sum.golang.org/lookup/rsc.io/quote@v1.5.2")
        assert got == (200, "text/plain; charset=utf-8", b"canned\n")
        assert (await _get(s, proxy.url + "/sumdb/sum.golang.org/latest"))[0] == 404


def test_proxy_runs_in_a_thread_for_synchronous_code() -> None:
    proxy = FixtureProxy([UPPER], name="threaded").start_in_thread()
    try:
        with urllib.request.urlopen(proxy.url + UPPER.url_path("mod"), timeout=5) as resp:
            assert resp.read() == UPPER.mod
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(proxy.url + "/example.com/nope/@v/list", timeout=5)
        err.value.close()
        assert err.value.code == 404
    finally:
        proxy.stop()
    assert proxy.count("/@v/") == 2


# ------------------------------------------------------------------------ the real go command


def _awkward_modules() -> tuple[list[FixtureModule], list[FixtureModule]]:
    """(everything the proxy serves, what the main module requires)."""
    multi = simple_module("example.com/multi/v2", "v2.1.0")
    upper = simple_module("example.com/Upper/Mod", "v1.0.0", deps=[multi])
    legacy = simple_module("example.com/legacy", "v2.0.0+incompatible")
    pseudo = simple_module("example.com/pseudo", "v0.0.0-20240102030405-abcdef123456")
    gopkg = simple_module("gopkg.in/fixture.v3", "v3.0.1")
    pre_old = simple_module("example.com/pre", "v1.2.0")
    pre = simple_module("example.com/pre", "v1.3.0-rc.1")
    retracted = simple_module("example.com/retract", "v1.0.0")
    retracting = simple_module("example.com/retract", "v1.1.0", retract=["v1.0.0 // broken"])
    required = [multi, upper, legacy, pseudo, gopkg, pre, retracting]
    return [*required, pre_old, retracted], required


@pytest.mark.e2e
async def test_go_command_downloads_builds_and_agrees_on_every_hash(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    served, required = _awkward_modules()
    async with FixtureProxy(served, name="e2e") as proxy:
        env = go_env(tmp_path, proxy.url, gocache=tmp_path_factory.getbasetemp() / "gocache")
        main = write_main_module(tmp_path / "main", "example.com/main", required)

        download = (await run_go(["mod", "download", "-json", "all"], main, env)).check()
        reports = download.json_objects()
        by_key = {(r["Path"], r["Version"]): r for r in reports}
        for m in required:
            report = by_key[m.key]
            assert "Error" not in report
            assert (report["Sum"], report["GoModSum"]) == (hash_module(m), hash_mod(m.mod))

        expected = sorted(line for m in required for line in gosum_lines(m))
        assert sorted((main / "go.sum").read_text().splitlines()) == expected

        (await run_go(["build", "-o", str(tmp_path / "hello"), "."], main, env)).check()
        assert sorted((main / "go.sum").read_text().splitlines()) == expected
        proc = await asyncio.create_subprocess_exec(
            str(tmp_path / "hello"), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert "example.com/Upper/Mod@v1.0.0 [example.com/multi/v2@v2.1.0]" in out.decode()
        assert all(f"{m.path}@{m.version}" in out.decode() for m in required)

        versions = ["list", "-m", "-versions", "example.com/pre", "example.com/retract"]
        listed = (await run_go(versions, main, env)).check()
        assert listed.stdout.splitlines() == [
            "example.com/pre v1.2.0 v1.3.0-rc.1",
            "example.com/retract v1.1.0",
        ]
        retracted = ["list", "-m", "-retracted", "-versions", "example.com/retract"]
        listed = (await run_go(retracted, main, env)).check()
        assert listed.stdout.splitlines() == ["example.com/retract v1.0.0 v1.1.0"]

    assert proxy.count("/example.com/%21upper/%21mod/@v/v1.0.0.zip") == 1
    assert not [r for r in proxy.requests if "/@v/" in r.path and "!" in r.path]
