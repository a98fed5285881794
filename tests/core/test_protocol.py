"""GOPROXY request parsing: every awkward module shape in, the go command's escaping out."""

from __future__ import annotations

import pytest

from router.core.errors import BadRequestError, ModuleError, ProtocolError
from router.core.protocol import (
    Kind,
    ModuleRequest,
    SumdbRequest,
    go_path_escape,
    parse_request_target,
)


@pytest.mark.parametrize(
    ("target", "kind", "module", "version", "upstream"),
    [
        (
            "/golang.org/x/mod/@v/list",
            Kind.LIST,
            "golang.org/x/mod",
            None,
            "golang.org/x/mod/@v/list",
        ),
        (
            "/golang.org/x/mod/@latest",
            Kind.LATEST,
            "golang.org/x/mod",
            None,
            "golang.org/x/mod/@latest",
        ),
        (
            "/golang.org/x/mod/@v/v0.2.0.info",
            Kind.INFO,
            "golang.org/x/mod",
            "v0.2.0",
            "golang.org/x/mod/@v/v0.2.0.info",
        ),
        # upper case: the go command sends '!' percent-encoded; both spellings are one module
        (
            "/github.com/%21azure/azure-sdk-for-go/@v/v1.0.0.mod",
            Kind.MOD,
            "github.com/Azure/azure-sdk-for-go",
            "v1.0.0",
            "github.com/%21azure/azure-sdk-for-go/@v/v1.0.0.mod",
        ),
        (
            "/github.com/!azure/azure-sdk-for-go/@v/v1.0.0.mod",
            Kind.MOD,
            "github.com/Azure/azure-sdk-for-go",
            "v1.0.0",
            "github.com/%21azure/azure-sdk-for-go/@v/v1.0.0.mod",
        ),
        (
            "/rsc.io/!q!u!o!t!e/@v/v1.5.3-!p!r!e.zip",
            Kind.ZIP,
            "rsc.io/QUOTE",
            "v1.5.3-PRE",
            "rsc.io/%21q%21u%21o%21t%21e/@v/v1.5.3-%21p%21r%21e.zip",
        ),
        # '+' is literal in a path; %2B is the same
        (
            "/rsc.io/breaker/@v/v2.0.0+incompatible.info",
            Kind.INFO,
            "rsc.io/breaker",
            "v2.0.0+incompatible",
            "rsc.io/breaker/@v/v2.0.0+incompatible.info",
        ),
        (
            "/rsc.io/breaker/@v/v2.0.0%2Bincompatible.zip",
            Kind.ZIP,
            "rsc.io/breaker",
            "v2.0.0+incompatible",
            "rsc.io/breaker/@v/v2.0.0+incompatible.zip",
        ),
        (
            "/example.com/m/@v/v0.0.0-20240102030405-abcdef123456.zip",
            Kind.ZIP,
            "example.com/m",
            "v0.0.0-20240102030405-abcdef123456",
            "example.com/m/@v/v0.0.0-20240102030405-abcdef123456.zip",
        ),
        (
            "/example.com/m/v2/@v/v2.1.0.mod",
            Kind.MOD,
            "example.com/m/v2",
            "v2.1.0",
            "example.com/m/v2/@v/v2.1.0.mod",
        ),
        (
            "/gopkg.in/yaml.v3/@v/v3.0.1.zip",
            Kind.ZIP,
            "gopkg.in/yaml.v3",
            "v3.0.1",
            "gopkg.in/yaml.v3/@v/v3.0.1.zip",
        ),
        (
            "/gopkg.in/check.v1/@v/v0.0.0-20161208181325-20d25e280405.mod",
            Kind.MOD,
            "gopkg.in/check.v1",
            "v0.0.0-20161208181325-20d25e280405",
            "gopkg.in/check.v1/@v/v0.0.0-20161208181325-20d25e280405.mod",
        ),
        (
            "/example.com/m/@v/v1.3.0-rc.1.info",
            Kind.INFO,
            "example.com/m",
            "v1.3.0-rc.1",
            "example.com/m/@v/v1.3.0-rc.1.info",
        ),
        # .info may carry a query: a branch, a commit prefix, a short version
        (
            "/example.com/m/@v/master.info",
            Kind.INFO,
            "example.com/m",
            "master",
            "example.com/m/@v/master.info",
        ),
        (
            "/example.com/m/@v/v1.2.info",
            Kind.INFO,
            "example.com/m",
            "v1.2",
            "example.com/m/@v/v1.2.info",
        ),
        # a query string never changes the request
        ("/example.com/m/@v/list?x=1", Kind.LIST, "example.com/m", None, "example.com/m/@v/list"),
        (
            "/example.com/~user/m/@v/list",
            Kind.LIST,
            "example.com/~user/m",
            None,
            "example.com/~user/m/@v/list",
        ),
    ],
)
def test_parse_module_requests(
    target: str, kind: Kind, module: str, version: str | None, upstream: str
) -> None:
    req = parse_request_target(target)
    assert isinstance(req, ModuleRequest)
    assert (req.kind, req.module, req.version) == (kind, module, version)
    assert req.upstream_path() == upstream


@pytest.mark.parametrize(
    ("target", "immutable"),
    [
        ("/example.com/m/@v/list", False),
        ("/example.com/m/@latest", False),
        ("/example.com/m/@v/v1.0.0.info", True),
        ("/example.com/m/@v/v1.0.0.mod", True),
        ("/example.com/m/@v/v1.0.0.zip", True),
        ("/example.com/m/@v/master.info", False),
        ("/example.com/m/@v/v1.2.info", False),
        ("/rsc.io/breaker/@v/v2.0.0+incompatible.info", True),
        ("/sumdb/sum.golang.org/tile/8/0/001", True),
        ("/sumdb/sum.golang.org/tile/8/0/001.p/5", True),
        ("/sumdb/sum.golang.org/latest", False),
    ],
)
def test_immutable_answers(target: str, immutable: bool) -> None:
    assert parse_request_target(target).immutable is immutable


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/example.com/../../@v/list",
        "/example.com/%2e%2e/@v/list",
        "/example.com/%2E%2E/m/@v/list",
        "/example.com%2fm/@v/list",
        "/example.com/m%5C/@v/list",
        "/example.com\\m/@v/list",
        "/example.com/m%00/@v/list",
        "/example.com/m\x00/@v/list",
        "/example.com/m/@v/v1.0.0.zip%",
        "/example.com/m/@v/v1.0.0.zip%zz",
        "/example.com/%zz/@v/list",
        "/example.com/m%/@v/list",
        "/example.com/%0d%0a/@v/list",
        "/example.com/m%0A/@v/list",
        "/example.com/m%7f/@v/list",
        "/example.com/%252e%252e/@v/list",  # `..` once decoded twice
        "/example.com/m/%252fx/@v/list",
        "/example.com/m/@v/%252e%252e%252fx.info",
        "/example.com/%2541/@v/list",
        "/example.com/m/@v/%ff.info",
        "/example.com//m/@v/list",
        "http://evil.example/example.com/m/@v/list",
        "example.com/m/@v/list",
        "*",
    ],
)
def test_hostile_targets_are_400(target: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_request_target(target)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/example.com/%0d%0a/@v/list", "control character in the request path"),
        ("/example.com/m%/@v/list", "malformed percent-encoding in the request path"),
        (
            "/example.com/%252e%252e/@v/list",
            "percent-escape left after decoding the request path once (encoded twice)",
        ),
    ],
)
def test_bad_escapes_say_why(target: str, reason: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_request_target(target)
    assert info.value.reason == reason


def test_an_encoded_percent_the_go_command_sends_is_not_a_double_encoding() -> None:
    """url.PathEscape sends a '%' of a revision query as %25; unless it forms an escape
    once decoded, the query is passed on, escaped again the same way."""
    req = parse_request_target("/example.com/m/@v/fix%25.info")
    assert isinstance(req, ModuleRequest)
    assert req.version == "fix%"
    assert req.upstream_path() == "example.com/m/@v/fix%25.info"


@pytest.mark.parametrize(
    "target",
    [
        "/github.com/GoogleCloudPlatform/omega/@v/list",  # raw upper case: not escaped
        "/github.com/!!google/omega/@v/list",
        "/github.com/!0google/omega/@v/list",
        "/github.com/google!/omega/@v/list",
        "/nodot/m/@v/list",
        "/example.com/m/@v/v1.0.0.tar",
        "/example.com/m/@v/",
        "/example.com/m/@v/.info",
        "/example.com/m",
        "/",
        "/example.com/m/@v/v2.0.0.mod",  # v2 needs /v2
        "/example.com/m/v2/@v/v1.0.0.zip",
        "/example.com/m/@v/v1.2.mod",  # .mod needs a canonical version
        "/example.com/m/@v/v1.0.0+meta.zip",
        "/gopkg.in/yaml.v3/@v/v2.0.0.zip",
        "/example.com/m/@v/master.zip",
        "/example.com/m/@v/V1.0.0.info",  # raw upper case in the version
        "/sumdb/sum.golang.org/unknown",
        "/sumdb/Bad_Name/latest",
        "/sumdb/sum.golang.org/tile/8/0/1",
    ],
)
def test_impossible_requests_are_404(target: str) -> None:
    with pytest.raises(ModuleError) as info:
        parse_request_target(target)
    assert info.value.status == 404


def test_sumdb_requests() -> None:
    supported = parse_request_target("/sumdb/sum.golang.org/supported")
    assert isinstance(supported, SumdbRequest)
    assert supported.is_supported_probe
    lookup = parse_request_target("/sumdb/sum.golang.org/lookup/github.com/%21azure/go@v1.2.3")
    assert isinstance(lookup, SumdbRequest)
    assert (lookup.module, lookup.version) == ("github.com/Azure/go", "v1.2.3")
    assert lookup.upstream_path() == "sumdb/sum.golang.org/lookup/github.com/%21azure/go@v1.2.3"
    tile = parse_request_target("/sumdb/sum.golang.org/tile/8/1/x001/234.p/7")
    assert tile.upstream_path() == "sumdb/sum.golang.org/tile/8/1/x001/234.p/7"
    data = parse_request_target("/sumdb/sum.golang.org/tile/8/data/005")
    assert data.upstream_path() == "sumdb/sum.golang.org/tile/8/data/005"


@pytest.mark.parametrize(
    "target",
    ["/sumdb/sum.golang.org/lookup/rsc.io/quote", "/sumdb/sum.golang.org/lookup/rsc.io/quote@v1"],
)
def test_bad_lookup_is_400(target: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request_target(target)
    assert info.value.status == 400


def test_go_path_escape_matches_go_url_path_escape() -> None:
    assert go_path_escape("a/b!c+d~e@f$g&h:i=j;k,l?m n") == "a/b%21c+d~e@f$g&h:i=j%3Bk%2Cl%3Fm%20n"
    assert go_path_escape("ü") == "%C3%BC"


def test_checksum_db_names_may_hold_a_path_like_gos_own_test_db() -> None:
    req = parse_request_target("/sumdb/localhost.localdev/sumdb/lookup/example.com/m@v1.0.0")
    assert isinstance(req, SumdbRequest)
    assert (req.db, req.module, req.version) == (
        "localhost.localdev/sumdb",
        "example.com/m",
        "v1.0.0",
    )
    assert req.upstream_path() == "sumdb/localhost.localdev/sumdb/lookup/example.com/m@v1.0.0"
    tile = parse_request_target("/sumdb/localhost.localdev/sumdb/tile/8/0/000.p/3")
    assert isinstance(tile, SumdbRequest) and tile.db == "localhost.localdev/sumdb"
    supported = parse_request_target("/sumdb/sum.golang.org:443/supported")
    assert isinstance(supported, SumdbRequest) and supported.db == "sum.golang.org:443"
