"""Go toolchain versions and constraints, plus the semver helpers the vectors miss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from router.core.versions import (
    GoVersion,
    GoVersionConstraint,
    InvalidConstraintError,
    build,
    canonical_version,
    compare,
    go_quote,
    go_quote_rune,
    is_zero_pseudo_version,
    major,
    major_minor,
    max_version,
    parse_go_version,
    prerelease,
    pseudo_version,
    sort_versions,
    zero_pseudo_version,
)

# --- parse_go_version --------------------------------------------------------

PARSE_CASES = [
    ("go1.21.3", GoVersion(1, 21, 3)),
    ("1.21", GoVersion(1, 21)),
    ("go1.21", GoVersion(1, 21)),
    ("go1.22rc1", GoVersion(1, 22, None, "rc", 1)),
    ("go1.22beta2", GoVersion(1, 22, None, "beta", 2)),
    ("1.22.0", GoVersion(1, 22, 0)),
    ("go1", GoVersion(1, 0, 0)),  # "1" means 1.0.0
    ("go1.20", GoVersion(1, 20, 0)),  # before 1.21 a missing patch is .0
    ("go1.20rc1", GoVersion(1, 20, None, "rc", 1)),
    ("go1.999testmod", GoVersion(1, 999, None, "testmod")),  # any lower-case kind
    ("go1.21.3-bigcorp", GoVersion(1, 21, 3)),  # custom toolchain suffix ignored
    ("  go1.21.3\n", GoVersion(1, 21, 3)),
    ("go1.99999999999999999", GoVersion(1, 99999999999999999)),
    ("devel go1.23-abcdef Tue Jan 2 15:04:05 2024 +0000", GoVersion(1, 23, devel=True)),
    ("devel +abcdef Tue Jan 2 15:04:05 2024 +0000", GoVersion(0, devel=True)),
    ("devel", GoVersion(0, devel=True)),
    # built with GOEXPERIMENT: runtime.Version() / go env GOVERSION append the experiments
    ("go1.22.0 X:loopvar", GoVersion(1, 22, 0)),
    ("go1.23.1 X:boringcrypto,rangefunc", GoVersion(1, 23, 1)),
    ("go1.24.2 X:nocoverageredesign", GoVersion(1, 24, 2)),
    ("go1.22rc1 X:loopvar", GoVersion(1, 22, None, "rc", 1)),
    ("go1.21.3-bigcorp X:boringcrypto", GoVersion(1, 21, 3)),
    ("  go1.22.0   X:loopvar\n", GoVersion(1, 22, 0)),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[t for t, _ in PARSE_CASES])
def test_parse_go_version(text: str, expected: GoVersion) -> None:
    assert parse_go_version(text) == expected


GARBAGE = [
    "",
    "   ",
    "garbage",
    "go",
    "go1.",
    "go1.21.",
    "go1.021",
    "go01.21",
    "go1.21.3rc1",  # Go has no prereleases of patch releases
    "go1.21rc01",
    "go1.600+auto",
    "GO1.21",
    "go 1.21",
    "go1.21 extra",
    # only the experiment suffix may follow the version, and only once
    "go1.22.0 X:",
    "go1.22.0 X:loopvar,",
    "go1.22.0 X:,loopvar",
    "go1.22.0 X:loop var",
    "go1.22.0 X:LoopVar",
    "go1.22.0 x:loopvar",
    "go1.22.0 X:loopvar extra",
    "go1.22.0 X:loopvar X:rangefunc",
    "go1.22.0 loopvar",
    "X:loopvar",
    "X:loopvar go1.22.0",
    "garbage X:loopvar",
    "v1.21.0",
    "go-1.21",
    "1.21x1y",
    "devel foo",
    "devel go",
    "devel gox",
    "devel +",
    "go1." + "9" * 5000,  # beyond Python's int-parsing limit: refused, not raised
]


@pytest.mark.parametrize("text", GARBAGE, ids=[repr(t[:20]) for t in GARBAGE])
def test_parse_go_version_rejects_garbage(text: str) -> None:
    assert parse_go_version(text) is None


def _v(text: str) -> GoVersion:
    version = parse_go_version(text)
    assert version is not None, text
    return version


# Ascending, as go/version.Compare orders them; rows that compare equal share a set.
ASCENDING = [
    {"go1", "go1.0.0"},
    {"go1.5"},
    {"go1.6"},
    {"go1.6.1"},
    {"go1.10"},
    {"go1.19alpha3"},
    {"go1.19beta2"},
    {"go1.19rc1"},
    {"go1.19rc2"},
    {"go1.19", "go1.19.0"},
    {"go1.19.1"},
    {"go1.20rc1"},
    {"go1.20", "go1.20.0", "go1.20.0-bigcorp"},
    {"go1.20.1"},
    {"go1.21", "1.21"},
    {"go1.21rc1"},
    {"go1.21rc2"},
    {"go1.21.0", "go1.21.0-bigcorp"},
    {"go1.21.3"},
    {"go1.99999999999999998"},
    {"go1.99999999999999999"},
    {"go2"},
    {"devel +abcdef"},
    {"devel go1.22-abcdef"},
    {"devel go1.23-abcdef", "devel go1.23-012345 Mon Jan 1 2024"},
]


def test_go_versions_order_like_go_version_compare() -> None:
    rows = [[_v(text) for text in row] for row in ASCENDING]
    for i, row_i in enumerate(rows):
        for j, row_j in enumerate(rows):
            for a in row_i:
                for b in row_j:
                    assert (a < b, a == b, a > b) == (i < j, i == j, i > j), (a, b)
                    assert (a <= b, a >= b) == (i <= j, i >= j), (a, b)


def test_devel_is_newer_than_every_release() -> None:
    assert _v("devel +abc") > _v("go999.999.999")
    assert _v("devel go1.21-abc") > _v("go1.99")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("1.21", "go1.21"),
        ("go1.21.3-bigcorp", "go1.21.3"),
        ("go1.22rc1", "go1.22rc1"),
        ("go1.20", "go1.20.0"),
        ("devel go1.23-abcdef", "devel go1.23"),
        ("devel +abc", "devel"),
    ],
)
def test_go_version_str(text: str, shown: str) -> None:
    assert str(_v(text)) == shown
    assert _v(shown) == _v(text)


def test_go_version_is_a_frozen_slotted_value() -> None:
    version = _v("go1.21.3")
    assert not hasattr(version, "__dict__")
    with pytest.raises(AttributeError):
        version.major = 2  # type: ignore[misc]
    assert {version, _v("1.21.3")} == {version}
    assert sorted([_v("go1.22"), _v("go1.21.3"), _v("devel"), _v("go1.21")]) == [
        _v("go1.21"),
        _v("go1.21.3"),
        _v("go1.22"),
        _v("devel"),
    ]


# --- GoVersionConstraint -------------------------------------------------------

CONSTRAINT_CASES = [
    ("<1.21", "go1.20.14", True),
    ("<1.21", "go1.20", True),
    ("<1.21", "go1.21", False),
    ("<1.21", "go1.21rc1", False),
    ("<1.21", "go1.21.0", False),
    ("<1.21", "go1.21.3", False),
    ("<1.21", "devel go1.20-abc", False),
    ("<=1.21", "go1.21", True),
    ("<=1.21", "go1.21rc1", False),
    (">1.21", "go1.21rc1", True),
    (">1.21", "go1.21", False),
    (">=1.21", "go1.21rc1", True),
    (">=1.21", "go1.21.0", True),
    (">=1.21", "go1.20.14", False),
    (">=1.22,<1.24", "go1.21.9", False),
    (">=1.22,<1.24", "go1.22rc1", True),
    (">=1.22,<1.24", "go1.22.0", True),
    (">=1.22,<1.24", "go1.23.7", True),
    (">=1.22,<1.24", "go1.24rc1", False),
    (">=1.22,<1.24", "go1.24.0", False),
    (">=1.22,<1.24", "devel go1.23-abc", False),
    (" >= 1.22 , < 1.24 ", "go1.23.1", True),
    ("!=1.20", "go1.20", False),
    ("!=1.20", "go1.20.0", False),  # go1.20 and go1.20.0 are the same version
    ("!=1.20", "go1.20.1", True),
    ("!=1.20", "go1.21.3", True),
    ("!=1.20", "devel", True),
    ("==1.21", "go1.21", True),
    ("==1.21", "1.21", True),
    ("==1.21", "go1.21.0", False),
    ("==1.21", "go1.21.3", False),
    ("1.21", "go1.21", True),
    ("1.21.3", "go1.21.3", True),
    ("==go1.21.3", "go1.21.3-bigcorp", True),
    ("go1.22rc1", "go1.22rc1", True),
    (">=1.22", "devel +abc", True),
    (">=1.22", "devel go1.21-abc", True),
]


@pytest.mark.parametrize(
    ("constraint", "version", "expected"),
    CONSTRAINT_CASES,
    ids=[f"{c.strip()}~{v}" for c, v, _ in CONSTRAINT_CASES],
)
def test_constraint_matches(constraint: str, version: str, expected: bool) -> None:
    assert GoVersionConstraint.parse(constraint).matches(_v(version)) is expected


def test_constraint_str_round_trips() -> None:
    parsed = GoVersionConstraint.parse(" >= 1.22 , <go1.24 ")
    assert str(parsed) == ">=1.22,<1.24"
    assert GoVersionConstraint.parse(str(parsed)) == parsed
    assert str(GoVersionConstraint.parse("1.21")) == "==1.21"


BAD_CONSTRAINTS = [
    ("", "empty constraint"),
    ("  ", "empty constraint"),
    (",", "empty clause"),
    ("<1.21,", "empty clause"),
    ("<", "no version after '<'"),
    (">= ", "no version after '>='"),
    ("=1.21", "unknown operator"),
    ("=>1.21", "unknown operator"),
    (">>1.21", "unknown operator"),
    ("~1.21", "unknown operator"),
    ("^1.21", "unknown operator"),
    ("<x", "'x' is not a Go release version"),
    ("<devel", "'devel' is not a Go release version"),
    ("1.21 1.22", "'1.21 1.22' is not a Go release version"),
    (">=1.21.3rc1", "is not a Go release version"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_CONSTRAINTS, ids=[t for t, _ in BAD_CONSTRAINTS])
def test_bad_constraints_raise_value_errors(text: str, reason: str) -> None:
    with pytest.raises(InvalidConstraintError) as caught:
        GoVersionConstraint.parse(text)
    assert isinstance(caught.value, ValueError)
    assert reason in str(caught.value)
    if text.strip():
        assert repr(text) in str(caught.value)


# --- semver helpers not covered by the x/mod vectors ---------------------------


@pytest.mark.parametrize(
    ("v", "maj", "maj_min", "pre", "bld"),
    [
        ("v2.1.0", "v2", "v2.1", "", ""),
        ("v2", "v2", "v2.0", "", ""),
        ("v2.1", "v2", "v2.1", "", ""),
        ("v1.2.3-pre.1+meta", "v1", "v1.2", "-pre.1", "+meta"),
        ("v2.0.0+incompatible", "v2", "v2.0", "", "+incompatible"),
        ("bad", "", "", "", ""),
        ("v1.2-pre", "", "", "", ""),
    ],
)
def test_semver_parts(v: str, maj: str, maj_min: str, pre: str, bld: str) -> None:
    assert (major(v), major_minor(v), prerelease(v), build(v)) == (maj, maj_min, pre, bld)


@pytest.mark.parametrize(
    ("v", "w", "expected"),
    [
        ("v1.9.0", "v1.10.0", -1),  # numbers, not strings
        ("v1.2.99999999999999999", "v1.2.100000000000000000", -1),
        ("v1.0.0-beta.2", "v1.0.0-beta.11", -1),
        ("v1.0.0-alpha", "v1.0.0-1", 1),  # numeric identifiers sort first
        ("v1.0.0-rc.1", "v1.0.0", -1),
        ("v1.2.3+meta", "v1.2.3", 0),
        ("v1", "v1.0.0", 0),
        ("bad", "v0.0.0", -1),
        ("bad", "worse", 0),
    ],
)
def test_compare(v: str, w: str, expected: int) -> None:
    assert compare(v, w) == expected
    assert compare(w, v) == -expected


def test_max_version_and_canonical_version() -> None:
    assert max_version("v1.2", "v1.1.9+meta") == "v1.2.0"
    assert max_version("bad", "v0.0.1") == "v0.0.1"
    assert max_version("bad", "worse") == ""
    assert canonical_version("v2.0+incompatible") == ""  # not valid semver
    assert canonical_version("v2.0.0+incompatible") == "v2.0.0+incompatible"
    assert canonical_version("v2.0.0+meta") == "v2.0.0"


def test_sort_versions_puts_invalid_first_and_breaks_ties_by_string() -> None:
    got = sort_versions(["v1.0.0", "v1", "zz", "v0.9.0", "aa", "v1.0"])
    assert got == ["aa", "zz", "v0.9.0", "v1", "v1.0", "v1.0.0"]


def test_pseudo_version_times_are_taken_in_utc() -> None:
    plus7 = datetime(2006, 1, 2, 22, 4, 5, tzinfo=timezone(timedelta(hours=7)))
    naive = datetime(2006, 1, 2, 15, 4, 5)
    for when in (plus7, naive, datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC)):
        assert pseudo_version("v1", "", when, "abc") == "v1.0.0-20060102150405-abc"


def test_zero_pseudo_version() -> None:
    assert zero_pseudo_version("") == "v0.0.0-00010101000000-000000000000"
    assert zero_pseudo_version("v2") == "v2.0.0-00010101000000-000000000000"
    assert is_zero_pseudo_version("v2.0.0-00010101000000-000000000000")
    assert not is_zero_pseudo_version("v2.0.0-20060102150405-000000000000")
    assert not is_zero_pseudo_version("")


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("x.y/z", '"x.y/z"'),
        ('a"b\\c', r'"a\"b\\c"'),
        ("tab\there\n", r'"tab\there\n"'),
        ("испытание☺", '"испытание☺"'),
        ("\x00\x7f\u00a0\u200b\U000e0001", r'"\x00\x7f\u00a0\u200b\U000e0001"'),
        (b"x\xffy".decode("utf-8", "surrogateescape"), r'"x\xffy"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_quote_rune() -> None:
    assert go_quote_rune("E") == "'E'"
    assert go_quote_rune("'") == r"'\''"
    assert go_quote_rune("\x00") == r"'\x00'"
    assert go_quote_rune("\udcff") == "'\ufffd'"
