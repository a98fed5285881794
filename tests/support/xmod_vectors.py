"""The Go team's golang.org/x/mod vectors (``tests/data/conformance/xmod_module_vectors.txt``).

Every line is one case: FUNCTION, TAB-separated arguments, EXPECTED. Fields escape
``\\ \t \n \r`` and bytes that are not UTF-8 (``\\xHH``); such arguments become Python
strings with ``surrogateescape``, which is how the ported functions represent Go strings
that are not valid UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.data import CONFORMANCE_DIR

VECTORS_FILE = "xmod_module_vectors.txt"
JSONL_TWIN = "xmod_module_vectors.jsonl"


@dataclass(frozen=True)
class Vector:
    """One case: FUNCTION, decoded arguments and the EXPECTED field, as written."""

    lineno: int
    func: str
    args: tuple[str, ...]
    expected: str
    raw_args: tuple[str, ...]

    @property
    def id(self) -> str:
        shown = "|".join(self.raw_args)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"L{self.lineno}-{self.func}({shown})->{self.expected[:40]}"


_SIMPLE_ESCAPES = {"\\": b"\\", "t": b"\t", "n": b"\n", "r": b"\r"}


def unescape_field(field: str) -> str:
    r"""Decode a field's ``\\ \t \n \r \xHH`` escapes; bad UTF-8 becomes lone surrogates."""
    out = bytearray()
    i = 0
    while i < len(field):
        ch = field[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        code = field[i + 1]
        if code == "x":
            out.append(int(field[i + 2 : i + 4], 16))
            i += 4
        elif code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code]
            i += 2
        else:
            raise ValueError(f"unknown escape \\{code} in field {field!r}")
    return out.decode("utf-8", "surrogateescape")


def load_vectors(path: Path) -> list[Vector]:
    """Parse every non-comment line of the vectors file."""
    vectors = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        assert len(parts) >= 3, f"line {lineno}: fewer than 3 TAB-separated fields: {line!r}"
        raw_args = tuple(parts[1:-1])
        args = tuple(unescape_field(a) for a in raw_args)
        vectors.append(Vector(lineno, parts[0], args, unescape_field(parts[-1]), raw_args))
    return vectors


def load_or_explain() -> tuple[list[Vector], str | None]:
    """The vectors, or no vectors and why (reported by a failing test, not at collection)."""
    path = CONFORMANCE_DIR / VECTORS_FILE
    try:
        return load_vectors(path), None
    except OSError as exc:
        return [], f"cannot read the x/mod vectors at {path}: {exc}"
