"""The files tests read: all under ``tests/data`` in this repository (see its README.md).

Nothing is read from outside the checkout, so a plain clone runs every test. A missing
file is a failure, never a skip: it means the checkout is incomplete.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CONFORMANCE_DIR = DATA_DIR / "conformance"
TRACES_DIR = DATA_DIR / "traces"


def conformance_file(name: str) -> Path:
    """A vector file under ``tests/data/conformance``; fails the test if it is missing."""
    path = CONFORMANCE_DIR / name
    if not path.is_file():
        pytest.fail(f"conformance file missing from the checkout: {path}")
    return path


def read_conformance(name: str) -> str:
    """The text of a vector file under ``tests/data/conformance``."""
    return conformance_file(name).read_text(encoding="utf-8")


def read_trace(name: str, limit: int | None = None) -> list[int]:
    """The keys of ``tests/data/traces/NAME.txt.gz`` (one integer per line), maybe the first
    ``limit`` of them."""
    path = TRACES_DIR / f"{name}.txt.gz"
    if not path.is_file():
        pytest.fail(f"trace missing from the checkout: {path}")
    with gzip.open(path, "rt", encoding="ascii") as fh:
        keys = [int(line) for line in fh if line.strip()]
    return keys[:limit]


LICENCES_DIR = DATA_DIR / "licenses"


def licence_text(spdx_id: str, holder: str = "2024 The Example Authors") -> str:
    """The real text of licence ``spdx_id`` from ``tests/data/licenses``, with the SPDX
    template's copyright placeholders filled in the way a real LICENSE file has them."""
    path = LICENCES_DIR / f"{spdx_id}.txt"
    if not path.is_file():
        pytest.fail(f"licence text missing from the checkout: {path}")
    text = path.read_text(encoding="utf-8")
    for placeholder in ("<year> <copyright holders>", "<year> <owner>"):
        text = text.replace(placeholder, holder)
    return text
