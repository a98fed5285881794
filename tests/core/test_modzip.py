"""Go's module zip rules (x/mod/zip CheckZip), as a table."""

from __future__ import annotations

import pytest

from router.core.modzip import MAX_GO_MOD, MAX_LICENSE, MAX_ZIP, fold, zip_problem

M, V = "example.com/m", "v1.0.0"
P = f"{M}@{V}/"
GOOD = [(P + "go.mod", 30), (P + "a.go", 10), (P + "sub/b.go", 10), (P + "LICENSE", 100)]


def _cause(entries: list[tuple[str, int]], zip_size: int = 1000) -> str | None:
    problem = zip_problem(entries, M, V, zip_size)
    return problem.cause if problem is not None else None


def test_a_well_formed_zip_passes() -> None:
    assert zip_problem(GOOD, M, V, 1000) is None
    assert zip_problem([(P, 0), *GOOD, (P + "sub/", 0)], M, V, 1000) is None  # folders ignored


@pytest.mark.parametrize(
    ("entries", "cause"),
    [
        ([(P + "../../../../tmp/x", 1)], "name"),
        ([(P + "a/../b.go", 1)], "name"),
        ([(P + "/etc/passwd", 1)], "name"),
        ([(P + "a\\b.go", 1)], "name"),
        ([(P + "a\x00b", 1)], "name"),
        ([(P + "x?y.go", 1)], "name"),
        ([(P + "./a.go", 1)], "name"),
        ([(P + "a.go", 1), (P + "a.go", 1)], "collision"),
        ([(P + "A.go", 1), (P + "a.go", 1)], "collision"),
        ([(P + "x/Y.go", 1), (P + "x/y.go", 1)], "collision"),
        ([(P + "x", 1), (P + "x/y.go", 1)], "collision"),
        ([(P + "sub/go.mod", 1)], "go_mod"),
        ([(P + "GO.MOD", 1)], "go_mod"),
        ([("other@v1.0.0/a.go", 1)], "prefix"),
        ([(f"{M}@v1.0.1/a.go", 1)], "prefix"),
        ([(P + "go.mod", MAX_GO_MOD + 1)], "size"),
        ([(P + "LICENSE", MAX_LICENSE + 1)], "size"),
        ([(P + "a.bin", MAX_ZIP // 2 + 1), (P + "b.bin", MAX_ZIP // 2 + 1)], "size"),
        ([(P, 0)], "empty"),
        ([], "empty"),
    ],
)
def test_zips_breaking_a_rule_are_named_by_cause(
    entries: list[tuple[str, int]], cause: str
) -> None:
    assert _cause(entries) == cause


def test_a_zip_file_over_500_mib_is_refused_by_its_own_size() -> None:
    problem = zip_problem(GOOD, M, V, MAX_ZIP + 1)
    assert problem is not None and problem.message == "zip is 500 MiB, over Go's limit of 500 MiB"


def test_messages_name_the_entry() -> None:
    problem = zip_problem([(P + "A.go", 1), (P + "a.go", 1)], M, V, 10)
    assert problem is not None
    assert problem.message == "case-insensitive file name collision: 'A.go' and 'a.go'"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("a", "A", True),
        ("K", "\u212a", True),
        ("ß", "ss", False),
        ("é", "É", True),
        ("a", "b", False),
    ],
)
def test_fold_agrees_with_gos_equal_fold(a: str, b: str, same: bool) -> None:
    assert (fold(a) == fold(b)) is same
