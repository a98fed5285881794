"""The docs say what the shipped default does, and it does it: the README's copy of
rules/default.yaml is the file, its `explain` output is what explain prints, and a
real gateway on those rules asks the upstreams in the order the comments promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from support.gateway import gateway_in_process, wait_for
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import Fault, FixtureProxy

from router.appkeys import SELECTION

REPO = Path(__file__).parents[1]
README = (REPO / "README.md").read_text()
DEFAULT = REPO / "rules" / "default.yaml"
EXPLAINED = "goproxy-router explain golang.org/x/mod@v0.20.0"
MODULES = [simple_module(f"example.com/m{i}", "v1.0.0") for i in range(12)]


def _fenced_after(text: str, marker: str, lang: str) -> str:
    """The body of the first ```lang block after `marker`."""
    assert marker in text, f"README lost the line {marker!r}"
    rest = text.split(marker, 1)[1]
    opening = f"```{lang}\n"
    assert opening in rest, f"no {opening.strip()} block after {marker!r}"
    return rest.split(opening, 1)[1].split("```\n", 1)[0]


def test_the_readme_shows_rules_default_yaml_byte_for_byte() -> None:
    shown = _fenced_after(README, "The shipped default, `rules/default.yaml`, whole:", "yaml")
    assert shown == DEFAULT.read_text()


def test_the_kubernetes_configmap_carries_the_same_rules() -> None:
    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())
    assert manifest["data"]["default.yaml"] == DEFAULT.read_text()


def _decision(output: dict[str, Any]) -> dict[str, Any]:
    """What the README promises of explain's output: the pool, the order, the scores."""
    keep = ("upstream", "score", "components", "cost_per_gb", "health", "tier")
    return {
        "pool": output["pool"],
        "order": output["order"],
        "candidates": [{k: c[k] for k in keep} for c in output["candidates"]],
    }


def test_the_readme_shows_what_explain_prints_for_the_shipped_rules() -> None:
    shown = json.loads(_fenced_after(README, EXPLAINED, "json"))
    done = subprocess.run(
        [sys.executable, "-m", "router", *EXPLAINED.split()[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert _decision(shown) == _decision(printed), f"re-run `{EXPLAINED}` into the README"
    assert printed["pool"]["mode"] == "best"
    assert printed["order"] == ["official", "goproxy-cn", "aliyun"]


def _shipped_rules_on_loopback(dest: Path, urls: dict[str, str], **extra: Any) -> Path:
    """rules/default.yaml with each upstream's url pointed at a local stand-in."""
    doc = yaml.safe_load(DEFAULT.read_text())
    for upstream in doc["upstreams"]:
        upstream["url"] = urls[upstream["name"]]
    doc.update(extra)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


async def _served_by(http: aiohttp.ClientSession, url: str, modules: int) -> list[str]:
    served = []
    for m in MODULES[:modules]:
        async with http.get(f"{url}/{m.path}/@v/v1.0.0.info") as resp:
            assert resp.status == 200
            served.append(resp.headers["X-Router-Upstream"])
    return served


async def test_a_fresh_gateway_on_the_shipped_rules_asks_proxy_golang_org_first(
    tmp_path: Path,
) -> None:
    names = ("official", "goproxy-cn", "aliyun")
    proxies = {n: FixtureProxy(ModuleSet(MODULES), name=n) for n in names}
    async with proxies["official"], proxies["goproxy-cn"], proxies["aliyun"]:
        urls = {n: p.url for n, p in proxies.items()}
        rules = _shipped_rules_on_loopback(tmp_path / "default.yaml", urls)
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            assert await _served_by(http, gw.url, 10) == ["official"] * 10


async def test_once_measured_the_fastest_upstream_comes_first(tmp_path: Path) -> None:
    names = ("official", "goproxy-cn", "aliyun")
    proxies = {n: FixtureProxy(ModuleSet(MODULES), name=n) for n in names}
    proxies["official"].add_fault(Fault(delay=0.2))  # far away, every answer slow
    async with proxies["official"], proxies["goproxy-cn"], proxies["aliyun"]:
        urls = {n: p.url for n, p in proxies.items()}
        rules = _shipped_rules_on_loopback(
            tmp_path / "default.yaml", urls, selection={"probe_interval": "200ms"}
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            assert gw.app is not None
            state = gw.app[SELECTION]
            await wait_for(lambda: all(state.rtt(n) is not None for n in names), timeout=10)
            served = await _served_by(http, gw.url, 5)
    assert "official" not in served, served  # about 100x slower than the mirrors: asked last
