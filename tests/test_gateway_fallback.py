"""The gateway against real loopback upstreams: each fallback rule for each failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support.gateway import gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, hash_zip, module_zip_bytes, simple_module
from support.goproxy_server import Fault, FixtureProxy

MOD = simple_module("example.com/dep", "v1.0.0")
UPPER = simple_module("example.com/Upper/Thing", "v1.2.0")
ONLY_B = simple_module("example.com/onlyb", "v0.1.0")
FAST = {"connect": "1s", "first_byte": "1s", "metadata": "2s", "total": "5s", "idle": "1s"}


@dataclass
class Env:
    a: FixtureProxy
    b: FixtureProxy
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **kw: object) -> tuple[int, bytes, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, **kw) as resp:  # type: ignore[arg-type]
            body = await resp.read()
            return resp.status, body, resp


async def _env(tmp_path: Path, fallback: str) -> AsyncIterator[Env]:
    a = FixtureProxy(ModuleSet([MOD, UPPER]), name="a")
    b = FixtureProxy(ModuleSet([MOD, UPPER, ONLY_B]), name="b")
    async with a, b:
        rules = one_pool_rules(
            tmp_path / "rules.yaml",
            {"a": a.url, "b": b.url},
            fallback=fallback,
            upstream_extra={"a": {"timeouts": FAST}, "b": {"timeouts": FAST}},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            yield Env(a, b, gw.url, http)


@pytest.fixture
async def notfound(tmp_path: Path) -> AsyncIterator[Env]:
    async for env in _env(tmp_path, "not-found"):
        yield env


@pytest.fixture
async def anyerror(tmp_path: Path) -> AsyncIterator[Env]:
    async for env in _env(tmp_path, "any-error"):
        yield env


MOD_PATH = "/example.com/dep/@v/v1.0.0.mod"

# (fault on the first upstream, status under not-found, status under any-error)
FAULTS = [
    pytest.param(Fault(status=404), 200, 200, id="404"),
    pytest.param(Fault(status=410), 200, 200, id="410"),
    pytest.param(Fault(status=500), 502, 200, id="500"),
    pytest.param(Fault(status=503), 502, 200, id="503"),
    pytest.param(Fault(status=403), 403, 200, id="403"),
    pytest.param(Fault(status=429), 502, 200, id="429"),
    pytest.param(Fault(delay=3.0), 504, 200, id="timeout"),
    pytest.param(Fault(reset=True), 502, 200, id="reset"),
    pytest.param(Fault(truncate_at=5), 502, 200, id="truncated"),
    pytest.param(Fault(stall_after=5, stall=5.0), 504, 200, id="stalled"),
    pytest.param(Fault(body=b"x" * (17 << 20)), 502, 200, id="oversized"),
]


@pytest.mark.parametrize(("fault", "status_nf", "status_any"), FAULTS)
async def test_not_found_mode_moves_on_only_after_404_410(
    notfound: Env, fault: Fault, status_nf: int, status_any: int
) -> None:
    notfound.a.add_fault(fault)
    status, body, resp = await notfound.get(MOD_PATH)
    assert status == status_nf
    if status == 200:
        assert body == MOD.mod
        assert resp.headers["X-Router-Upstream"] == "b"
    else:
        assert notfound.b.count("example.com/dep") == 0, "must not fall back on a real error"
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert len(body.decode().strip().splitlines()) == 1
        assert resp.headers["X-Router-Upstream"] == "a"


@pytest.mark.parametrize(("fault", "status_nf", "status_any"), FAULTS)
async def test_any_error_mode_moves_on_after_every_failure(
    anyerror: Env, fault: Fault, status_nf: int, status_any: int
) -> None:
    anyerror.a.add_fault(fault)
    status, body, resp = await anyerror.get(MOD_PATH)
    assert status == status_any
    assert body == MOD.mod
    assert resp.headers["X-Router-Upstream"] == "b"


async def test_first_upstream_serves_and_second_is_not_asked(notfound: Env) -> None:
    status, body, resp = await notfound.get(MOD_PATH)
    assert (status, body) == (200, MOD.mod)
    assert resp.headers["X-Router-Upstream"] == "a"
    assert notfound.b.count("example.com/dep") == 0


async def test_module_only_on_second_upstream(notfound: Env) -> None:
    status, body, _ = await notfound.get("/example.com/onlyb/@v/list")
    assert (status, body) == (200, b"v0.1.0\n")


async def test_not_found_everywhere_is_404_with_the_last_reason(notfound: Env) -> None:
    notfound.b.add_fault(Fault(status=410))
    status, _body, resp = await notfound.get("/example.com/nothere/@v/v1.0.0.info")
    assert status == 410
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    status, _, _ = await notfound.get("/example.com/nothere/@v/list")
    assert status == 410


async def test_error_preference_last_real_error_over_not_found(anyerror: Env) -> None:
    anyerror.a.add_fault(Fault(status=500))
    anyerror.b.add_fault(Fault(status=404))
    status, body, resp = await anyerror.get(MOD_PATH)
    assert status == 502
    assert body.startswith(b"upstream a: 500")
    # the header names the upstream whose failure is reported, not the last one asked
    assert resp.headers["X-Router-Upstream"] == "a"


async def test_unreachable_upstream(tmp_path: Path) -> None:
    b = FixtureProxy(ModuleSet([MOD]), name="b")
    async with b:
        for mode, expected in (("not-found", 502), ("any-error", 200)):
            rules = one_pool_rules(
                tmp_path / f"{mode}.yaml",
                {"dead": "http://127.0.0.1:9", "b": b.url},
                fallback=mode,
            )
            async with (
                gateway_in_process(rules) as gw,
                aiohttp.ClientSession() as http,
                http.get(gw.url + MOD_PATH) as resp,
            ):
                assert resp.status == expected
                if expected == 502:
                    text = await resp.text()
                    assert text.startswith("upstream dead: connection refused by 127.0.0.1:9")
                    assert "ssl:" not in text and "Connect call failed" not in text  # aiohttp's


async def test_zip_truncated_midway_aborts_the_client(notfound: Env) -> None:
    zip_len = len(module_zip_bytes(MOD))
    notfound.a.add_fault(Fault(pattern=r"\.zip$", truncate_at=zip_len // 2))
    with pytest.raises(aiohttp.ClientPayloadError):
        await notfound.get("/example.com/dep/@v/v1.0.0.zip")


async def test_zip_streams_whole_with_headers(notfound: Env) -> None:
    status, body, resp = await notfound.get("/example.com/dep/@v/v1.0.0.zip")
    assert status == 200
    assert hash_zip(body) == hash_zip(module_zip_bytes(MOD))
    assert resp.headers["Content-Type"] == "application/zip"
    assert int(resp.headers["Content-Length"]) == len(body)


async def test_head_of_a_zip_has_length_and_no_body(notfound: Env) -> None:
    async with notfound.http.head(notfound.url + "/example.com/dep/@v/v1.0.0.zip") as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(module_zip_bytes(MOD))
        assert await resp.read() == b""


async def test_upper_case_path_reaches_upstream_escaped_like_go(notfound: Env) -> None:
    from yarl import URL

    for spelling in ("!upper/!thing", "%21upper/%21thing"):
        url = URL(f"{notfound.url}/example.com/{spelling}/@v/v1.2.0.info", encoded=True)
        async with notfound.http.get(url) as resp:
            assert resp.status == 200
    raw = [r.path for r in notfound.a.requests]
    assert raw == ["/example.com/%21upper/%21thing/@v/v1.2.0.info"] * 2


async def test_invalid_requests_never_reach_an_upstream(notfound: Env) -> None:
    from yarl import URL

    for path, status in [
        ("/example.com/dep/@v/v2.0.0.mod", 404),
        ("/Example.com/dep/@v/list", 404),
        ("/example.com/%2e%2e/@v/list", 400),
        ("/example.com/dep%2F..%2Fx/@v/list", 400),
        ("/example.com/dep/@v/v1.0.0.exe", 404),
        ("/example.com/dep/@v/v1.0.zip", 404),
    ]:
        async with notfound.http.get(URL(notfound.url + path, encoded=True)) as resp:
            assert resp.status == status, path
            assert resp.headers["X-Router-Upstream"] == "none"
    assert notfound.a.requests == [] and notfound.b.requests == []


async def test_request_id_echoed_or_made(notfound: Env) -> None:
    _, _, resp = await notfound.get(MOD_PATH, headers={"X-Request-ID": "build-42"})
    assert resp.headers["X-Request-ID"] == "build-42"
    assert notfound.a.requests[-1].headers.get("X-Request-ID") == "build-42"
    _, _, resp = await notfound.get(MOD_PATH, headers={"X-Request-ID": "bad id\twith tab"})
    assert resp.headers["X-Request-ID"] != "bad id\twith tab"
    _, _, resp = await notfound.get("/healthz")
    assert len(resp.headers["X-Request-ID"]) == 32
    assert resp.headers["X-Router-Upstream"] == "none"


async def test_methods_other_than_get_head_are_405(notfound: Env) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        async with notfound.http.request(method, notfound.url + MOD_PATH) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET, HEAD"
    assert notfound.a.requests == []


async def test_redirect_followed_only_on_same_host(notfound: Env) -> None:
    notfound.a.add_fault(
        Fault(
            pattern=r"dep/@v/v1\.0\.0\.info",
            redirect_to=notfound.a.url + "/example.com/dep/@v/list",
            times=1,
        )
    )
    status, body, _ = await notfound.get("/example.com/dep/@v/v1.0.0.info")
    assert (status, body) == (200, b"v1.0.0\n")
    other = notfound.b.url.replace("127.0.0.1", "localhost")
    notfound.a.add_fault(Fault(pattern=r"\.mod$", redirect_to=other + "{path}"))
    status, body, _ = await notfound.get(MOD_PATH)
    assert status == 502
    assert b"refused a redirect to http://localhost:" in body


async def test_content_type_passes_through(notfound: Env) -> None:
    _, _, resp = await notfound.get("/example.com/dep/@v/v1.0.0.info")
    assert resp.headers["Content-Type"] == "application/json"
    _, body, resp = await notfound.get("/example.com/dep/@latest")
    assert resp.headers["Content-Type"] == "application/json"
    assert b'"Version":"v1.0.0"' in body.replace(b" ", b"")
