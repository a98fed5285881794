"""One plan for every request: a live gateway and `explain` against its state agree on
the route, the pool and the first upstream, for generated requests over every shipped
and example rule set (their upstreams pointed at loopback fixtures)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from support.gateway import gateway_in_process
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy

REPO = Path(__file__).resolve().parents[1]
RULE_SETS = [REPO / "rules" / "default.yaml", *sorted((REPO / "rules" / "examples").glob("*.yaml"))]
MODULES = [
    "golang.org/x/mod",
    "golang.org/x/crypto",
    "github.com/cloudflare/circl",
    "corp.example.com/finance/ledger",
    "corp.example.com/shared/util",
    "corp.example.com/devops/tool",
    "git.build.example.com/app",
    "git.payments.example.com/core",
]
KINDS = ["info", "mod", "zip", "list"]
GO_VERSIONS = [None, "go1.20.3", "go1.23.1"]


def _loopback_rules(source: Path, urls: dict[str, str], dest: Path) -> Path:
    """`source` with every upstream at its fixture, nothing that needs the internet or
    secrets, no caches (every answer comes from an upstream), ranking without luck."""
    doc = yaml.safe_load(source.read_text())
    for up in doc["upstreams"]:
        up["url"] = urls[up["name"]]
        up.pop("auth", None)
        up.pop("tls", None)
    for key in ("tls", "listen", "redis"):
        doc.pop(key, None)
    doc["cache"] = {"memory": 0}
    for db in doc.get("checksum_dbs", []):
        db.pop("url", None)
    doc.setdefault("selection", {})["mode"] = "best"  # `weighted` draws; explain shows best
    for pool in doc["pools"].values():
        if pool.get("mode") == "weighted":
            pool["mode"] = "best"
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def _questions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    who: list[dict[str, Any]] = [{}]
    for tenant in doc.get("tenants", []):
        if tenant.get("tokens"):
            who.append({"token": f"{tenant['id']}-example-token", "tenant": tenant["id"]})
        else:
            who.append({"tenant": tenant["id"]})
    out = []
    for person in who:
        for module in MODULES:
            for kind in KINDS:
                for go in GO_VERSIONS:
                    q = {"module": module, "kind": kind, **person}
                    if kind != "list":
                        q["version"] = "v1.0.0"
                    if go:
                        q["go_version"] = go
                    out.append(q)
    return random.Random(7).sample(out, min(len(out), 90))


def _sent(q: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The request a client would send for question `q`."""
    path = f"/{q['module']}/@v/" + ("list" if q["kind"] == "list" else f"v1.0.0.{q['kind']}")
    headers = {}
    if "token" in q:
        import base64

        raw = f"{q['tenant']}:{q['token']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    elif "tenant" in q:
        headers["X-Tenant-ID"] = q["tenant"]
    if "go_version" in q:
        headers["X-Go-Version"] = q["go_version"]
    return path, headers


class _Access(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if fields is not None:
            self.lines.append(fields)


@pytest.fixture
def access() -> Iterator[_Access]:
    handler = _Access()
    logger = logging.getLogger("goproxy_router.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("source", RULE_SETS, ids=lambda p: p.name)
async def test_the_gateway_does_what_explain_says(
    tmp_path: Path, source: Path, access: _Access
) -> None:
    doc = yaml.safe_load(source.read_text())
    mods = ModuleSet([simple_module(m, "v1.0.0") for m in MODULES])
    async with AsyncExitStack() as stack:
        proxies = {
            up["name"]: await stack.enter_async_context(FixtureProxy(mods, name=up["name"]))
            for up in doc["upstreams"]
        }
        rules = _loopback_rules(source, {n: p.url for n, p in proxies.items()}, tmp_path / "r.yaml")
        gw = await stack.enter_async_context(gateway_in_process(rules))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        checked = 0
        for q in _questions(doc):
            async with http.post(gw.url + "/debug/explain", data=json.dumps(q)) as resp:
                assert resp.status == 200
                plan = await resp.json()
            path, headers = _sent(q)
            access.lines.clear()
            async with http.get(gw.url + path, headers=headers) as resp:
                body = (await resp.read()).decode(errors="replace")
                status, upstream = resp.status, resp.headers["X-Router-Upstream"]
            gw.flush_access_log()
            line = access.lines[-1]
            what = f"{q} -> {status} {upstream}"
            if "answer" in plan:  # refused without any upstream: the same status and words
                assert (status, body) == (plan["answer"]["status"], plan["answer"]["reason"] + "\n")
                assert upstream == "none", what
                continue
            assert line["route"] == plan["route"]["matched"], what
            assert line["pool"] == plan["pool"]["name"], what
            if status == 200 and not plan["verify_checksums"]:
                assert upstream == plan["order"][0], what
                checked += 1
        assert checked >= 10  # enough of them reached an upstream to compare the first
