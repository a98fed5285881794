"""Tenancy end to end: .netrc over HTTPS with the real go command, header tenants,
private modules that never reach a public upstream, X-Go-Version routes, refusals."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from support.gateway import gateway_in_process, write_rules
from support.gocmd import go_env, run_go
from support.gomod import ModuleSet, hash_module, simple_module
from support.goproxy_server import FixtureProxy

from router.core.tenancy import token_digest

LIB = simple_module("example.com/lib", "v0.1.0")
LEDGER = simple_module("corp.example.com/finance/ledger", "v1.2.0")
AUDIT = simple_module("corp.example.com/audit/log", "v1.0.0")
FIN_TOKEN = "fin-s3cret-token"


@dataclass
class Company:
    public: FixtureProxy
    finance: FixtureProxy
    health: FixtureProxy
    legacy: FixtureProxy
    url: str
    ca_file: Path
    ssl: ssl.SSLContext


@pytest.fixture
async def company(tmp_path: Path) -> AsyncIterator[Company]:
    public = FixtureProxy(ModuleSet([LIB]), name="public", sumdb=["sum.golang.org"])
    finance = FixtureProxy(ModuleSet([LIB, LEDGER]), name="finance", sumdb=["sum.golang.org"])
    health = FixtureProxy(ModuleSet([LIB]), name="health")
    legacy = FixtureProxy(ModuleSet([LIB]), name="legacy")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    async with public, finance, health, legacy:
        rules = write_rules(
            tmp_path / "rules.yaml",
            [
                {"name": "public", "url": public.url, "sumdb": ["sum.golang.org"]},
                {
                    "name": "fin-athens",
                    "url": finance.url,
                    "public": False,
                    "sumdb": ["sum.golang.org"],
                },
                {"name": "health-up", "url": health.url},
                {"name": "legacy-up", "url": legacy.url},
            ],
            {
                "public": {"upstreams": ["public"]},
                "finance": {"upstreams": ["public", "fin-athens"]},
                "health": {"upstreams": ["health-up"]},
                "legacy": {"upstreams": ["legacy-up"]},
            },
            tenants=[
                {
                    "id": "finance",
                    "tokens": [token_digest(FIN_TOKEN)],
                    "pool": "finance",
                    "private": ["corp.example.com/finance"],
                },
                {"id": "audit", "pool": "public", "private": ["corp.example.com/audit"]},
                {"id": "health", "pool": "health"},
            ],
            routes=[{"name": "legacy-go", "match": {"go_version": "<1.21"}, "pool": "legacy"}],
            default={"pool": "public", "anonymous": True},
            selection={"mode": "ordered"},
            cache={"memory": 0},
        )
        async with gateway_in_process(rules, ssl_context=server_ctx) as gw:
            yield Company(public, finance, health, legacy, gw.url, ca_file, client_ctx)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _get(
    c: Company, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(c.url + path, headers=headers or {}, ssl=c.ssl) as resp,
    ):
        return resp.status, await resp.read(), resp


@pytest.mark.e2e
async def test_netrc_tenant_downloads_through_https_from_its_pool(
    company: Company, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = company.url.rsplit(":", 1)[1]
    netrc = f"machine 127.0.0.1:{port} login finance password {FIN_TOKEN}\n"
    env = go_env(
        tmp_path,
        company.url,
        netrc=netrc,
        ssl_cert_file=company.ca_file,
        gocache=tmp_path_factory.getbasetemp() / "gocache",
    )
    done = await run_go(
        [
            "mod",
            "download",
            "-json",
            "corp.example.com/finance/ledger@v1.2.0",
            "example.com/lib@v0.1.0",
        ],
        tmp_path,
        env,
    )
    reports = {r["Path"]: r for r in done.check().json_objects()}
    assert reports["corp.example.com/finance/ledger"]["Sum"] == hash_module(LEDGER)
    assert reports["example.com/lib"]["Sum"] == hash_module(LIB)
    # the private module went to the private upstream only, with the tenant's identity
    assert company.finance.count("corp.example.com/finance/ledger/@v/v1.2.0.zip") == 1
    assert company.public.count("corp.example.com") == 0
    assert company.public.count("example.com/lib/@v/v0.1.0.zip") == 1
    # the credential is the gateway's business: it never travels upstream
    for req in company.public.requests + company.finance.requests:
        assert "Authorization" not in req.headers


@pytest.mark.e2e
async def test_go_without_credentials_is_anonymous_and_cannot_see_private(
    company: Company, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = go_env(
        tmp_path,
        company.url,
        ssl_cert_file=company.ca_file,
        gocache=tmp_path_factory.getbasetemp() / "gocache",
    )
    done = await run_go(
        ["mod", "download", "corp.example.com/finance/ledger@v1.2.0"], tmp_path, env
    )
    assert done.returncode != 0
    assert "404 Not Found" in done.stderr
    assert company.finance.requests == [] and company.public.requests == []


async def test_same_module_through_header_tenant_goes_to_its_upstream(company: Company) -> None:
    status, _, resp = await _get(
        company, "/example.com/lib/@v/v0.1.0.mod", {"X-Tenant-ID": "health"}
    )
    assert status == 200
    assert resp.headers["X-Router-Upstream"] == "health-up"
    assert company.health.count("example.com/lib") == 1
    assert company.public.count("example.com/lib") == 0


ENDPOINTS = [
    "/corp.example.com/finance/ledger/@v/list",
    "/corp.example.com/finance/ledger/@latest",
    "/corp.example.com/finance/ledger/@v/v1.2.0.info",
    "/corp.example.com/finance/ledger/@v/v1.2.0.mod",
    "/corp.example.com/finance/ledger/@v/v1.2.0.zip",
]


async def test_private_module_never_reaches_a_public_upstream(company: Company) -> None:
    auth = {"Authorization": _basic("finance", FIN_TOKEN)}
    for path in ENDPOINTS:
        status, _, resp = await _get(company, path, auth)
        assert status == 200, path
        assert resp.headers["X-Router-Upstream"] == "fin-athens"
    lookup = "/sumdb/sum.golang.org/lookup/corp.example.com/finance/ledger@v1.2.0"
    status, body, _ = await _get(company, lookup, auth)
    assert status == 404
    assert b"GONOSUMDB" in body or b"GOPRIVATE" in body
    assert company.public.count("corp.example.com") == 0
    assert company.finance.count("/sumdb/") == 0


async def test_private_module_without_private_upstream_is_404_and_counted(company: Company) -> None:
    headers = {"X-Tenant-ID": "audit"}
    for path in [
        p.replace("finance/ledger", "audit/log").replace("v1.2.0", "v1.0.0") for p in ENDPOINTS
    ]:
        status, _, _ = await _get(company, path, headers)
        assert status == 404
    assert company.public.count("corp.example.com") == 0
    status, body, _ = await _get(company, "/metrics")
    assert b'goproxy_router_private_blocked_total{tenant="audit"} 5.0' in body


async def test_other_tenants_private_module_looks_not_found(company: Company) -> None:
    for headers in ({"X-Tenant-ID": "health"}, {}):
        for path in ENDPOINTS:
            status, body, resp = await _get(company, path, headers)
            assert status == 404
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert b"private" not in body
    for up in (company.public, company.finance, company.health):
        assert up.count("corp.example.com") == 0


async def test_old_go_versions_go_to_the_legacy_pool(company: Company) -> None:
    status, _, resp = await _get(
        company, "/example.com/lib/@v/v0.1.0.info", {"X-Go-Version": "go1.20"}
    )
    assert status == 200
    assert resp.headers["X-Router-Upstream"] == "legacy-up"
    status, _, resp = await _get(
        company, "/example.com/lib/@v/v0.1.0.info", {"X-Go-Version": "go1.22.1"}
    )
    assert resp.headers["X-Router-Upstream"] == "public"
    status, _, resp = await _get(
        company, "/example.com/lib/@v/v0.1.0.info", {"X-Go-Version": "nonsense"}
    )
    assert resp.headers["X-Router-Upstream"] == "public"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": _basic("finance", "wrong")}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-Tenant-ID": "finance"}, 401),
        ({"X-Tenant-ID": "nobody"}, 401),
        ({"Authorization": _basic("finance", FIN_TOKEN), "X-Tenant-ID": "health"}, 403),
        ({"Authorization": "Bearer " + FIN_TOKEN, "X-Tenant-ID": "finance"}, 200),
    ],
)
async def test_refusals(company: Company, headers: dict[str, str], status: int) -> None:
    got, body, resp = await _get(company, "/example.com/lib/@v/v0.1.0.info", headers)
    assert got == status
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="goproxy-router"'
    assert FIN_TOKEN.encode() not in body
