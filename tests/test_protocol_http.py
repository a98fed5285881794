"""Every module-path and version vector of the Go team, through a running gateway.

``tests/core/test_xmod_conformance.py`` checks the pure core against the x/mod vectors; this
file checks that the gateway as a whole gives the same verdict over HTTP. Each vector
becomes one or more raw request targets (module paths both in ``@v/list`` and in a
checksum-DB lookup), written the way the go command writes them
(upper case as ``!x``, then Go's ``url.PathEscape``, so ``!`` travels as ``%21``) and in
the other spellings a client may use (a literal ``!``, every byte percent-encoded, no
case escaping at all). A valid path must reach the upstream, asked for with exactly the
go command's escaping; an invalid one must be answered 400 or 404 with no upstream call.

One gateway and one fixture upstream (which answers 404 to everything) serve the whole
module; all targets are sent once, concurrently, over raw sockets so nothing rewrites them,
and each case then checks its own recorded answer. The X-Request-ID the gateway forwards
ties every upstream request to the target that caused it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.gateway import gateway_in_process, one_pool_rules
from support.goproxy_server import FixtureProxy
from support.xmod_vectors import Vector, load_or_explain

VECTORS, LOAD_ERROR = load_or_explain()
MODULE = "example.com/m"  # the module the version vectors are asked about (major v0/v1)
SUMDB = "sum.golang.org"  # module paths are also checked in checksum-DB lookups
REFUSED = (400, 404)
WORKERS = 8

# The bytes Go's url.PathEscape leaves alone in a path segment; the go command keeps '/'.
_GO_PATH_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+:=@/"
)

# Vector functions with no HTTP verdict of their own, and why.
NOT_ABOUT_REQUESTS = {
    "CheckFilePath": "file names inside a module zip, never part of a request path",
    "CheckPathMajor": "covered through Check(path, version)",
    "MatchPathMajor": "covered through Check(path, version)",
    "SplitPathVersion": "a helper of CheckPath, covered through it",
    "MatchPrefixPatterns": "GOPRIVATE-style globs in the rules, not request syntax",
    "PseudoVersion": "builds a version; what is requested is covered by semver.Canonical",
    "IsPseudoVersion": "a pseudo-version is requested like any version (semver.Canonical)",
    "PseudoVersionTime": "reads a version's fields; no request verdict",
    "PseudoVersionRev": "reads a version's fields; no request verdict",
    "PseudoVersionBase": "reads a version's fields; no request verdict",
    "semver.IsValid": "paired with semver.Canonical, which decides the .mod verdict",
    "semver.Sort": "ordering, not request syntax",
}


# --------------------------------------------------------------------- the go command's escaping


def case_escape(text: str) -> str:
    """module.EscapePath/EscapeVersion's case escaping: each upper-case letter X is !x."""
    return "".join(f"!{ch.lower()}" if "A" <= ch <= "Z" else ch for ch in text)


def path_escape(text: str, *, keep: bytes = b"") -> str:
    """Go's url.PathEscape over a '/'-separated path (the go command keeps the slashes);
    ``keep`` names extra bytes to leave as they are. Bytes that are not UTF-8 (lone
    surrogates here) are escaped as the bytes they stand for."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if b in _GO_PATH_SAFE or b in keep else f"%{b:02X}" for b in raw)


def encode_all(text: str) -> str:
    """Every byte but '/' percent-encoded: legal, and must mean the same once decoded."""
    raw = text.encode("utf-8", "surrogateescape")
    return "".join("/" if b == 0x2F else f"%{b:02X}" for b in raw)


# --------------------------------------------------------------------- cases from the vectors


@dataclass(frozen=True)
class Case:
    """One raw request target and what must happen to it (``upstream`` None: refused)."""

    source: str
    target: str
    upstream: str | None

    @property
    def id(self) -> str:
        shown = self.target if len(self.target) <= 50 else self.target[:47] + "..."
        return f"{self.source}:{shown}"


def _source(v: Vector) -> str:
    return f"L{v.lineno}-{v.func}"


def list_target(escaped: str) -> str:
    return f"/{escaped}/@v/list"


def lookup_target(escaped: str) -> str:
    return f"/sumdb/{SUMDB}/lookup/{escaped}@v1.0.0"


def module_cases(source: str, spellings: Sequence[str], wanted: str | None) -> Iterator[Case]:
    """Each spelling of a module path, asked for its list and its checksum-DB lookup;
    ``wanted`` is the go command's spelling when the path is valid, else None."""
    for endpoint in (list_target, lookup_target):
        for spelling in spellings:
            yield Case(source, endpoint(spelling), None if wanted is None else endpoint(wanted))


def valid_path_cases(source: str, path: str) -> Iterator[Case]:
    """A valid module path: every spelling reaches the upstream as the go command's."""
    escaped = case_escape(path)
    spellings = (path_escape(escaped), path_escape(escaped, keep=b"!"), encode_all(escaped))
    return module_cases(source, spellings, path_escape(escaped))


def invalid_path_cases(source: str, path: str) -> Iterator[Case]:
    """An invalid module path: refused however it is spelled."""
    escaped = case_escape(path)
    spellings = (
        path_escape(escaped),
        path_escape(escaped, keep=b"!"),
        path_escape(path),
        encode_all(path),
    )
    return module_cases(source, spellings, None)


def escaped_path_cases(source: str, escaped: str, unescaped: str | None) -> Iterator[Case]:
    """UnescapePath: an escaped path as sent; valid ones reach the upstream re-escaped."""
    wanted = None if unescaped is None else path_escape(case_escape(unescaped))
    spellings = (path_escape(escaped), path_escape(escaped, keep=b"!"))
    return module_cases(source, spellings, wanted)


def _file(module: str, escaped_version: str, ext: str) -> str:
    return f"/{path_escape(case_escape(module))}/@v/{path_escape(escaped_version)}.{ext}"


def cases_for(v: Vector) -> Iterator[Case]:
    """The request targets one vector stands for (none for functions in NOT_ABOUT_REQUESTS)."""
    source, out = _source(v), v.expected.removeprefix("out:")
    if v.func in ("CheckPath", "EscapePath"):
        valid = v.expected != "err"
        yield from (valid_path_cases if valid else invalid_path_cases)(source, v.args[0])
    elif v.func == "CheckImportPath" and v.expected == "err":
        yield from invalid_path_cases(source, v.args[0])  # not even an import path
    elif v.func == "UnescapePath":
        yield from escaped_path_cases(source, v.args[0], None if v.expected == "err" else out)
    elif v.func == "Check":
        target = _file(v.args[0], case_escape(v.args[1]), "mod")
        yield Case(source, target, target if v.expected == "ok" else None)
    elif v.func == "EscapeVersion":
        target = _file(MODULE, out if v.expected != "err" else case_escape(v.args[0]), "info")
        yield Case(source, target, target if v.expected != "err" else None)
    elif v.func == "UnescapeVersion":
        target = _file(MODULE, v.args[0], "info")
        wanted = None if v.expected == "err" else _file(MODULE, case_escape(out), "info")
        yield Case(source, target, wanted)
    elif v.func == "semver.Canonical":
        # .mod needs a version that is canonical as written; anything else is refused
        target = _file(MODULE, case_escape(v.args[0]), "mod")
        yield Case(source, target, target if out == v.args[0] else None)


def all_cases(vectors: Iterable[Vector]) -> list[Case]:
    return [case for v in vectors for case in cases_for(v)]


CASES = all_cases(VECTORS)

# Percent-escapes no vector covers: malformed, control bytes, encoded twice. Each is
# refused with 400 and a one-line reason (README, docs/security.md), never reaching an
# upstream, also where they land in a version query (which is otherwise passed through).
BAD_ESCAPES = [
    "/x.y/%0d%0a/@v/list",
    "/x.y/z%0A/@v/list",
    "/x.y/z%00/@v/list",
    "/x.y/z%7F/@v/list",
    "/x.y/%252e%252e/@v/list",
    "/x.y/z/%252F/@v/list",
    "/x.y/%2541/@v/list",
    "/x.y/%zz/@v/list",
    "/x.y/z%/@v/list",
    "/x.y/z%4/@v/list",
    "/x.y/z/@v/%252e%252e%252fsecret.info",
    "/x.y/z/@v/v1.0.0%0d%0a.info",
    "/x.y/z/@v/v1.0.0.info%",
    f"/sumdb/{SUMDB}/lookup/x.y/%252e%252e@v1.0.0",
]
# What the go command sends for a revision holding a '%' (url.PathEscape: %25) still works.
GO_QUERIES = {
    "/x.y/z/@v/fix%25.info": "/x.y/z/@v/fix%25.info",
    "/x.y/z/@v/50%25off.info": "/x.y/z/@v/50%25off.info",
}


# --------------------------------------------------------------------- sending them


@dataclass(frozen=True)
class Outcome:
    """What the gateway answered a target, and what it asked the upstream for it."""

    status: int
    reason: str
    upstream_paths: tuple[str, ...]


async def send_raw(port: int, target: str, request_id: str) -> tuple[int, str]:
    """One GET with ``target`` written byte for byte on the request line: status, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {request_id}\r\n"
        writer.write((head + "Connection: close\r\n\r\n").encode("ascii"))
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split(b" ")[1]), body.decode("utf-8", "replace").strip()


async def run_targets(targets: list[str]) -> dict[str, Outcome]:
    """Send every target through a real gateway in front of a 404-only fixture upstream."""
    async with FixtureProxy(name="vectors", sumdb=[SUMDB]) as upstream:
        with tempfile.TemporaryDirectory() as tmp:
            rules = one_pool_rules(
                Path(tmp) / "rules.yaml",
                {"up": upstream.url},
                upstream_extra={"up": {"sumdb": [SUMDB]}},
            )
            async with gateway_in_process(rules) as gw:
                port = int(gw.url.rsplit(":", 1)[1])
                answers = await _send_all(port, targets)
        asked: dict[str, list[str]] = {}
        for req in upstream.requests:
            asked.setdefault(req.headers.get("X-Request-ID", ""), []).append(req.path)
    return {
        target: Outcome(status, reason, tuple(asked.get(f"v{i}", ())))
        for i, (target, (status, reason)) in enumerate(zip(targets, answers, strict=True))
    }


async def _send_all(port: int, targets: list[str]) -> list[tuple[int, str]]:
    gate = asyncio.Semaphore(WORKERS)

    async def one(i: int, target: str) -> tuple[int, str]:
        async with gate:
            return await send_raw(port, target, f"v{i}")

    return await asyncio.gather(*(one(i, t) for i, t in enumerate(targets)))


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    targets = sorted({case.target for case in CASES} | set(BAD_ESCAPES) | GO_QUERIES.keys())
    return asyncio.run(run_targets(targets))


# --------------------------------------------------------------------- the checks


def _case_params() -> list[object]:
    if LOAD_ERROR is not None:
        return [pytest.param(None, id="vectors-file-missing")]
    return [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", _case_params())
def test_vector_verdict_through_http(case: Case | None, outcomes: dict[str, Outcome]) -> None:
    if case is None:
        pytest.fail(LOAD_ERROR or "no vectors")
    got = outcomes[case.target]
    if case.upstream is None:
        assert got.status in REFUSED, f"{case.source}: {case.target} answered {got}"
        assert got.upstream_paths == (), f"{case.source}: {case.target} reached the upstream"
    else:
        assert got.upstream_paths == (case.upstream,), f"{case.source}: {case.target}: {got}"


@pytest.mark.parametrize("target", BAD_ESCAPES)
def test_bad_percent_escapes_are_400(target: str, outcomes: dict[str, Outcome]) -> None:
    got = outcomes[target]
    assert got.status == 400, got
    assert got.reason and "\n" not in got.reason, got
    assert got.upstream_paths == (), got


@pytest.mark.parametrize(("target", "upstream"), sorted(GO_QUERIES.items()))
def test_a_percent_in_a_revision_query_reaches_the_upstream(
    target: str, upstream: str, outcomes: dict[str, Outcome]
) -> None:
    assert outcomes[target].upstream_paths == (upstream,), outcomes[target]


def test_every_vector_function_is_sent_or_says_why_not() -> None:
    assert LOAD_ERROR is None, LOAD_ERROR
    sent = {v.func for v in VECTORS if any(True for _ in cases_for(v))}
    named = {v.func for v in VECTORS}
    assert named - sent <= NOT_ABOUT_REQUESTS.keys(), sorted(
        named - sent - NOT_ABOUT_REQUESTS.keys()
    )
    assert len(CASES) > 1000


def test_targets_shared_by_vectors_agree() -> None:
    wanted: dict[str, str | None] = {}
    for case in CASES:
        assert wanted.setdefault(case.target, case.upstream) == case.upstream, case


def test_case_escaping_here_is_the_one_in_the_vectors() -> None:
    """The escaping this file sends is checked against EscapePath/EscapeVersion outputs."""
    escapes = [v for v in VECTORS if v.func in ("EscapePath", "EscapeVersion")]
    checked = [v for v in escapes if v.expected.startswith("out:")]
    assert checked, LOAD_ERROR
    for v in checked:
        assert case_escape(v.args[0]) == v.expected.removeprefix("out:"), v.id


def test_path_escape_is_gos() -> None:
    """url.PathEscape("a/b!c+d~e@f$g&h:i=j;k,l?m n") with the go command's '/' kept."""
    assert path_escape("a/b!c+d~e@f$g&h:i=j;k,l?m n") == "a/b%21c+d~e@f$g&h:i=j%3Bk%2Cl%3Fm%20n"
    assert path_escape("ü") == "%C3%BC"
