"""Checksum-database pass-through: probe answered from the pool, bytes forwarded unchanged."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from support.gateway import gateway_in_process, one_pool_rules
from support.goproxy_server import FixtureProxy
from yarl import URL

LOOKUP = "/sumdb/sum.golang.org/lookup/rsc.io/quote@v1.5.2"
SIGNED = (
    b"104\nrsc.io/quote v1.5.2 h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y=\n"
    b"rsc.io/quote v1.5.2/go.mod h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0=\n\n"
    b"go.sum database tree\n1234\nabc=\n\n\xe2\x80\x94 sum.golang.org Az3grnmfake=\n"
)


async def test_supported_only_when_an_upstream_proxies_the_db(tmp_path: Path) -> None:
    plain = FixtureProxy([], name="plain")
    sums = FixtureProxy([], name="sums", sumdb=["sum.golang.org"])
    async with plain, sums:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"plain": plain.url, "sums": sums.url},
            upstream_extra={"sums": {"sumdb": ["sum.golang.org"]}},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/sumdb/sum.golang.org/supported") as resp:
                assert resp.status == 200
            async with http.get(gw.url + "/sumdb/sum.example.org/supported") as resp:
                assert resp.status == 404
            sums.sumdb_responses[LOOKUP] = SIGNED
            async with http.get(gw.url + LOOKUP) as resp:
                assert resp.status == 200
                assert await resp.read() == SIGNED
                assert resp.headers["X-Router-Upstream"] == "sums"
            tile = "/sumdb/sum.golang.org/tile/8/0/x001/234.p/7"
            sums.sumdb_responses[tile] = b"\x00\x01tile-bytes"
            async with http.get(gw.url + tile) as resp:
                assert await resp.read() == b"\x00\x01tile-bytes"
    # the probe is answered locally; only the upstream that proxies the DB was asked
    assert plain.requests == []
    assert [r.path for r in sums.requests] == [LOOKUP, tile]


async def test_no_sumdb_upstream_means_404_so_go_talks_to_the_db_directly(tmp_path: Path) -> None:
    async with FixtureProxy([], name="plain") as plain:
        rules = one_pool_rules(tmp_path / "r.yaml", {"plain": plain.url})
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            for path in ("/sumdb/sum.golang.org/supported", LOOKUP):
                async with http.get(gw.url + path) as resp:
                    assert resp.status == 404
    assert plain.requests == []


async def test_malformed_lookup_is_400_and_not_forwarded(tmp_path: Path) -> None:
    async with FixtureProxy([], name="s", sumdb=["sum.golang.org"]) as sums:
        rules = one_pool_rules(
            tmp_path / "r.yaml",
            {"s": sums.url},
            upstream_extra={"s": {"sumdb": ["sum.golang.org"]}},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            for path in ("/sumdb/sum.golang.org/lookup/rsc.io/quote", "/sumdb/sum.golang.org/x"):
                async with http.get(URL(gw.url + path, encoded=True)) as resp:
                    assert resp.status in (400, 404)
    assert sums.requests == []
