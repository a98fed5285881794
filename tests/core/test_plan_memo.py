"""`decide_once` remembers plans per rule set: the same plan as `decide` for every
combination of what decide reads, and bounded."""

from __future__ import annotations

import itertools

import pytest
from core.test_routing import RULES
from multidict import CIMultiDict, CIMultiDictProxy

from router.core import plan as plans
from router.core.plan import Asked, Compiled, decide, decide_once
from router.core.protocol import parse_request_target
from router.core.tenancy import Identity

COMPILED = Compiled.build(RULES)
TARGETS = [
    "/x.org/m/@v/list",
    "/x.org/m/@v/v1.0.0.info",
    "/corp.example.com/lib/@v/v1.0.0.mod",
    "/a.example.org/z/@v/v1.0.0.zip",
]
TENANTS = [None, *RULES.tenants]
HEADERS = [
    {},
    {"X-Go-Version": "go1.20.3"},
    {"x-go-version": "go1.22.1"},
    {"User-Agent": "ci-bot/2"},
    {"X-Team": "payments"},
    {"X-Team": "payments", "X-Go-Version": "go1.19"},
]


def _asked(method: str, headers: dict[str, str]) -> Asked:
    return Asked(method, CIMultiDictProxy(CIMultiDict(headers)))


def test_the_headers_routes_read_are_in_the_key() -> None:
    assert set(COMPILED.read_headers) == {"x-go-version", "user-agent", "x-team"}


def test_a_remembered_plan_is_the_plan_decide_makes() -> None:
    compiled = Compiled.build(RULES)
    cases = itertools.product(TARGETS, TENANTS, HEADERS, ("GET", "HEAD"))
    for _ in range(2):  # the second round answers from memory
        for target, tenant, headers, method in cases:
            request = parse_request_target(target)
            who = Identity(tenant, "header" if tenant else "anonymous")
            asked = _asked(method, headers)
            assert decide_once(compiled, request, who, asked) == decide(
                compiled, request, who, asked
            ), (target, tenant, headers, method)
        cases = itertools.product(TARGETS, TENANTS, HEADERS, ("GET", "HEAD"))
    assert 0 < len(compiled.plans) <= len(TARGETS) * len(TENANTS) * len(HEADERS) * 2


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = Compiled.build(RULES)
    monkeypatch.setattr(plans, "PLANS_REMEMBERED", 3)
    for i in range(10):
        request = parse_request_target(f"/x.org/m{i}/@v/list")
        decide_once(compiled, request, Identity(None, "anonymous"), _asked("GET", {}))
        assert len(compiled.plans) <= 3
