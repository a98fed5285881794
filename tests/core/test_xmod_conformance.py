"""The Go team's golang.org/x/mod test vectors, checked line by line.

The vectors live in ``tests/data/conformance/xmod_module_vectors.txt`` (provenance in
``tests/data/README.md``; parsing in ``support.xmod_vectors``). Every line is one case;
every FUNCTION named in the file must be mapped below, so new vectors cannot be silently
ignored. A missing file is a failure, not a skip.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from support.data import conformance_file
from support.xmod_vectors import JSONL_TWIN, Vector, load_or_explain

from router.core import modpath, versions
from router.core.errors import ModuleError

MIN_VECTORS = 700  # the file holds 778 cases; fewer means it was truncated
GO_TIME = "%Y-%m-%dT%H:%M:%SZ"  # how the vectors write a time.Time (RFC 3339, UTC)

VECTORS, LOAD_ERROR = load_or_explain()


# --- what each FUNCTION of the file calls ----------------------------------


def _semver_sort(_args: Sequence[str]) -> list[list[str]]:
    """semver.Sort over the semver test-table inputs, shuffled a few ways."""
    inputs = [v.args[0] for v in VECTORS if v.func == "semver.IsValid"]
    results = []
    for seed in range(5):
        shuffled = list(inputs)
        random.Random(seed).shuffle(shuffled)
        results.append(versions.sort_versions(shuffled))
    return results


def _split_path_version(args: Sequence[str]) -> list[object]:
    return list(modpath.split_path_version(args[0]))


def _pseudo_version(args: Sequence[str]) -> str:
    major, older, when, rev = args
    return versions.pseudo_version(major, older, datetime.strptime(when, GO_TIME), rev)


def _pseudo_version_time(args: Sequence[str]) -> str:
    when = versions.pseudo_version_time(args[0])
    assert when.tzinfo is UTC
    return when.isoformat().replace("+00:00", "Z")


Handler = Callable[[Sequence[str]], object]

HANDLERS: dict[str, Handler] = {
    "Check": lambda a: modpath.check(a[0], a[1]),
    "CheckPath": lambda a: modpath.check_path(a[0]),
    "CheckImportPath": lambda a: modpath.check_import_path(a[0]),
    "CheckFilePath": lambda a: modpath.check_file_path(a[0]),
    "CheckPathMajor": lambda a: modpath.check_path_major(a[0], a[1]),
    "MatchPathMajor": lambda a: modpath.match_path_major(a[0], a[1]),
    "SplitPathVersion": _split_path_version,
    "EscapePath": lambda a: modpath.escape_path(a[0]),
    "UnescapePath": lambda a: modpath.unescape_path(a[0]),
    "EscapeVersion": lambda a: modpath.escape_version(a[0]),
    "UnescapeVersion": lambda a: modpath.unescape_version(a[0]),
    "MatchPrefixPatterns": lambda a: modpath.match_prefix_patterns(a[0], a[1]),
    "PseudoVersion": _pseudo_version,
    "IsPseudoVersion": lambda a: versions.is_pseudo_version(a[0]),
    "PseudoVersionTime": _pseudo_version_time,
    "PseudoVersionRev": lambda a: versions.pseudo_version_rev(a[0]),
    "PseudoVersionBase": lambda a: versions.pseudo_version_base(a[0]),
    "semver.IsValid": lambda a: versions.is_valid(a[0]),
    "semver.Canonical": lambda a: versions.canonical(a[0]),
    "semver.Sort": _semver_sort,
}


def _expected_output(vector: Vector) -> object:
    """The value an ``out:`` case expects (JSON for multi-value results)."""
    text = vector.expected.removeprefix("out:")
    if vector.func == "semver.Sort":
        return [json.loads(text)] * 5
    return json.loads(text) if text.startswith("[") else text


def _vector_params() -> list[object]:
    if LOAD_ERROR is not None:
        return [pytest.param(None, id="vectors-file-missing")]
    return [pytest.param(v, id=v.id) for v in VECTORS]


def _describe(vector: Vector) -> str:
    return f"line {vector.lineno}: {vector.func}{vector.args!r}"


@pytest.mark.parametrize("vector", _vector_params())
def test_vector(vector: Vector | None) -> None:
    if vector is None:
        pytest.fail(LOAD_ERROR or "no vectors")
    handler = HANDLERS.get(vector.func)
    assert handler is not None, f"line {vector.lineno}: no handler for {vector.func!r}"
    expected = vector.expected
    if expected == "err":
        with pytest.raises(ModuleError):
            handler(vector.args)
        return
    result = handler(vector.args)  # any error here fails the case
    if expected == "ok":
        assert result is None, _describe(vector)
    elif expected in ("true", "false"):
        assert result is (expected == "true"), _describe(vector)
    else:
        assert expected.startswith("out:"), f"line {vector.lineno}: bad EXPECTED {expected!r}"
        assert result == _expected_output(vector), _describe(vector)


def test_vectors_file_is_complete() -> None:
    assert LOAD_ERROR is None, LOAD_ERROR
    assert len(VECTORS) >= MIN_VECTORS, f"only {len(VECTORS)} vectors: truncated file?"


def test_every_function_in_the_file_is_mapped() -> None:
    assert LOAD_ERROR is None, LOAD_ERROR
    named = {v.func for v in VECTORS}
    unknown = named - HANDLERS.keys()
    assert not unknown, f"vectors name functions with no handler: {sorted(unknown)}"
    assert {v.expected.split(":")[0] for v in VECTORS} <= {"ok", "err", "true", "false", "out"}


def test_split_path_version_reassembles_every_checked_path() -> None:
    """TestSplitPathVersion: prefix + pathMajor == path for every checkPathTests path."""
    paths = [v.args[0] for v in VECTORS if v.func == "CheckPath"]
    assert paths, LOAD_ERROR
    for path in paths:
        prefix, path_major, _ = modpath.split_path_version(path)
        assert prefix + path_major == path


def test_semver_compare_follows_table_order() -> None:
    """TestCompare: the semver table is ascending; equal Canonical forms compare equal."""
    table = [(v.args[0], v.expected.removeprefix("out:")) for v in VECTORS]
    table = [row for row, v in zip(table, VECTORS, strict=True) if v.func == "semver.Canonical"]
    assert table, LOAD_ERROR
    for i, (vi, ci) in enumerate(table):
        for j, (vj, cj) in enumerate(table):
            want = 0 if ci == cj else (-1 if i < j else 1)
            assert versions.compare(vi, vj) == want, (vi, vj)


def test_escapes_agree_with_the_jsonl_twin() -> None:
    """The TAB file's escapes decode to the bytes the JSON Lines twin records."""
    twin = conformance_file(JSONL_TWIN)
    records = [json.loads(line) for line in twin.read_text(encoding="utf-8").splitlines() if line]
    assert len(records) == len(VECTORS)
    for record, vector in zip(records, VECTORS, strict=True):
        assert record["func"] == vector.func, _describe(vector)
        assert record["expect"] == vector.expected, _describe(vector)
        decoded = [a.encode("utf-8", "surrogateescape").hex() for a in vector.args]
        assert decoded == record["args_hex"], _describe(vector)


# --- beyond the vectors: wording, recorded from the Go implementation -------

BAD_BYTE = b"\xff".decode("utf-8", "surrogateescape")

GO_MESSAGES: list[tuple[Callable[..., object], tuple[str, ...], str]] = [
    (modpath.check_path, ("x",), 'malformed module path "x": missing dot in first path element'),
    (
        modpath.check_path,
        (f"x.y/{BAD_BYTE}z",),
        r'malformed module path "x.y/\xffz": invalid UTF-8',
    ),
    (
        modpath.check_path,
        ("Example.com/x",),
        "malformed module path \"Example.com/x\": invalid char 'E' in first path element",
    ),
    (modpath.check_path, ("x.y/z/v1",), 'malformed module path "x.y/z/v1": invalid version'),
    (
        modpath.check_import_path,
        ("x.y/com1.txt",),
        'malformed import path "x.y/com1.txt": "com1" disallowed as path element component'
        " on Windows",
    ),
    (
        modpath.check_import_path,
        ("x.y/z~09",),
        'malformed import path "x.y/z~09": trailing tilde and digits in path element',
    ),
    (modpath.check_file_path, ("x.y/z☺",), "malformed file path \"x.y/z☺\": invalid char '☺'"),
    (
        modpath.check_file_path,
        ("x.y/a\x00b",),
        r"""malformed file path "x.y/a\x00b": invalid char '\x00'""",
    ),
    (
        modpath.check,
        ("github.com/go-yaml/yaml", "v2.0.0"),
        "github.com/go-yaml/yaml@v2.0.0: invalid version: should be v0 or v1, not v2",
    ),
    (
        modpath.check,
        ("rsc.io/quote", "0.1.0"),
        "rsc.io/quote@0.1.0: invalid version: not a semantic version",
    ),
    (
        modpath.check,
        ("gopkg.in/yaml.v1", "v2.0.0"),
        "gopkg.in/yaml.v1@v2.0.0: invalid version: should be v1, not v2",
    ),
    (
        modpath.escape_version,
        ("v1.0.0!",),
        'version "v1.0.0!" invalid: disallowed version string',
    ),
    (modpath.unescape_version, ("v1.0.0-!",), 'invalid escaped version "v1.0.0-!"'),
    (
        modpath.unescape_path,
        ("github.com/!!google",),
        'invalid escaped module path "github.com/!!google"',
    ),
    (
        modpath.unescape_path,
        ("rsc.io/!q!u!o!t!e/v1",),
        'invalid escaped module path "rsc.io/!q!u!o!t!e/v1": malformed module path'
        ' "rsc.io/QUOTE/v1": invalid version',
    ),
    (
        modpath.check_path_major,
        ("v1.0.0", ".v2-unstable"),
        'version "v1.0.0" invalid: should be v2, not v1',
    ),
    (
        versions.pseudo_version_base,
        ("v0.0.0-0.20060102150405-hash",),
        'pseudo-version "v0.0.0-0.20060102150405-hash" invalid: version before v0.0.0 would'
        " have negative patch number",
    ),
    (
        versions.pseudo_version_base,
        ("v0.0.0-20060102150405-hash+incompatible",),
        'pseudo-version "v0.0.0-20060102150405-hash+incompatible" invalid: lacks base version,'
        ' but has build metadata "+incompatible"',
    ),
    (
        versions.pseudo_version_time,
        ("v1.2.4-0.20061302150405-hash",),
        'pseudo-version "v1.2.4-0.20061302150405-hash" invalid: malformed time "20061302150405"',
    ),
    (versions.pseudo_version_rev, ("v1.2.3",), 'pseudo-version "v1.2.3" invalid: syntax error'),
]


@pytest.mark.parametrize(
    ("func", "args", "message"),
    GO_MESSAGES,
    ids=[f"{f.__name__}{args!r}" for f, args, _ in GO_MESSAGES],
)
def test_error_messages_read_like_go(
    func: Callable[..., object], args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ModuleError) as caught:
        func(*args)
    assert str(caught.value) == message
    assert caught.value.status == 404


@pytest.mark.parametrize(
    ("pattern", "name", "matched"),
    [
        ("*/quote", "rsc.io/quote", True),
        ("r[a-z]c.io", "rsc.io", True),
        ("r[^a-z]c.io", "rsc.io", False),
        (r"r\sc.io", "rsc.io", True),
        ("?sc.io", "/sc.io", False),
        # Go matches bytes: the star may stop inside "é", whose second byte is not "é".
        ("*[^é]x", "éx", True),
    ],
)
def test_path_match_like_go(pattern: str, name: str, matched: bool) -> None:
    assert modpath.path_match(pattern, name) is matched


@pytest.mark.parametrize(("pattern", "name"), [("[", "a"), ("a[", "b"), ("a\\", "a"), ("[]", "a")])
def test_path_match_reports_bad_patterns(pattern: str, name: str) -> None:
    with pytest.raises(modpath.BadPatternError, match="syntax error in pattern"):
        modpath.path_match(pattern, name)


def test_match_prefix_patterns_skips_malformed_globs() -> None:
    assert modpath.match_prefix_patterns("[,rsc.io", "rsc.io/quote")
    assert not modpath.match_prefix_patterns("[", "rsc.io/quote")
    assert modpath.match_prefix_patterns("r[a-z]c.io/q*", "rsc.io/quote/v3")
