"""Who is asking and what they may see: identity order, refusals, allow/deny/private."""

from __future__ import annotations

import base64

import pytest

from router.core.model import Default, Pool, Rules, Tenant, Upstream
from router.core.tenancy import Identity, Refusal, TenantIndex, identify, token_digest, visibility


def _rules(anonymous: bool = True) -> Rules:
    return Rules(
        upstreams=(Upstream("a", "https://a.example"),),
        pools=(Pool("main", ("a",)),),
        default=Default(pool="main", anonymous=anonymous),
        tenants=(
            Tenant(
                "finance", tokens=(token_digest("fin-token"),), private=("corp.example.com/fin",)
            ),
            Tenant("devops", tokens=(token_digest("dev-token"), token_digest("dev-2"))),
            Tenant("health", private=("corp.example.com/health",)),
            Tenant(
                "platform",
                tokens=(token_digest("plat"),),
                deny=("github.com/banned/*",),
                allow=("github.com", "golang.org"),
            ),
        ),
        trusted_proxies=("10.20.0.0/16",),
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


INDEX = TenantIndex.build(_rules())


@pytest.mark.parametrize(
    ("authorization", "header", "peer", "expected"),
    [
        (basic("finance", "fin-token"), None, None, ("finance", "basic")),
        ("Bearer dev-2", None, None, ("devops", "bearer")),
        ("bearer dev-token", None, None, ("devops", "bearer")),
        (None, "health", None, ("health", "header")),
        (None, None, None, (None, "anonymous")),
        (None, "finance", "10.20.1.2", ("finance", "trusted-header")),
        (basic("finance", "fin-token"), "finance", None, ("finance", "basic")),
        # refusals
        (basic("finance", "wrong"), None, None, 401),
        (basic("devops", "fin-token"), None, None, 401),  # someone else's token
        ("Bearer nope", None, None, 401),
        ("Basic !!!notbase64", None, None, 401),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None, None, 401),
        ("Digest abc", None, None, 401),
        (None, "finance", None, 401),  # a tenant with tokens needs them
        (None, "finance", "192.0.2.1", 401),  # not a trusted proxy
        (None, "nobody", None, 401),  # unknown tenants look the same as known ones
        (basic("finance", "fin-token"), "devops", None, 403),
        ("Bearer dev-token", "finance", None, 403),
    ],
)
def test_identify(
    authorization: str | None, header: str | None, peer: str | None, expected: object
) -> None:
    got = identify(INDEX, authorization=authorization, tenant_header=header, peer=peer)
    if isinstance(expected, int):
        assert isinstance(got, Refusal)
        assert got.status == expected
        assert got.challenge is (expected == 401)
        assert "token" not in got.reason.lower() or "tok" not in (authorization or "")
    else:
        assert isinstance(got, Identity)
        assert (got.tenant_id, got.method) == expected


def test_unknown_and_tokened_tenant_header_refusals_are_indistinguishable() -> None:
    a = identify(INDEX, authorization=None, tenant_header="finance", peer=None)
    b = identify(INDEX, authorization=None, tenant_header="nobodyx", peer=None)
    assert isinstance(a, Refusal) and isinstance(b, Refusal)
    assert (a.status, a.reason.replace("finance", "X")) == (
        b.status,
        b.reason.replace("nobodyx", "X"),
    )


def test_anonymous_refused_when_rules_say_so() -> None:
    index = TenantIndex.build(_rules(anonymous=False))
    got = identify(index, authorization=None, tenant_header=None, peer=None)
    assert isinstance(got, Refusal) and got.status == 401


def test_client_certificate_wins_over_headers() -> None:
    rules = _rules()
    tenants = (*rules.tenants[:-1], Tenant("ci", client_certs=("ci-runner",)))
    index = TenantIndex.build(Rules(rules.upstreams, rules.pools, rules.default, tenants))
    got = identify(
        index, authorization=None, tenant_header=None, peer=None, cert_names=["ci-runner"]
    )
    assert isinstance(got, Identity) and got.tenant_id == "ci"
    refused = identify(
        index, authorization=None, tenant_header="health", peer=None, cert_names=["ci-runner"]
    )
    assert isinstance(refused, Refusal) and refused.status == 403


def _who(tenant_id: str | None) -> Identity:
    return Identity(INDEX.by_id[tenant_id] if tenant_id else None, "test")


@pytest.mark.parametrize(
    ("tenant", "module", "allowed", "private", "hidden"),
    [
        ("platform", "github.com/banned/thing", False, False, False),
        ("platform", "github.com/ok/thing", True, False, False),
        ("platform", "example.org/other", False, False, False),  # not in allow
        ("finance", "corp.example.com/fin/ledger", True, True, False),
        ("health", "corp.example.com/fin/ledger", True, True, True),
        (None, "corp.example.com/fin/ledger", True, True, True),
        ("health", "corp.example.com/health/x", True, True, False),
        ("finance", "corp.example.com/other", True, False, False),
        (None, "golang.org/x/mod", True, False, False),
    ],
)
def test_visibility(
    tenant: str | None, module: str, allowed: bool, private: bool, hidden: bool
) -> None:
    seen = visibility(INDEX, _who(tenant), module)
    assert (seen.allowed, seen.private, seen.hidden) == (allowed, private, hidden)
    if not allowed:
        assert tenant is not None and tenant in seen.reason


def test_deny_reason_names_the_rule() -> None:
    seen = visibility(INDEX, _who("platform"), "github.com/banned/x")
    assert "github.com/banned/*" in seen.reason
