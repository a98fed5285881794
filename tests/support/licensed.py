"""Fixture modules carrying real licence files (texts from ``tests/data/licenses``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .data import licence_text
from .gomod import FixtureModule, simple_module


def licensed_module(
    path: str,
    version: str,
    files: Mapping[str, str],
    *,
    extra: Mapping[str, bytes] | None = None,
    time: datetime | None = None,
) -> FixtureModule:
    """A buildable module whose ``files`` map a file name (``LICENSE``, ``sub/COPYING``) to
    the SPDX id of the real licence text written there; ``extra`` adds raw files."""
    written = {name: licence_text(spdx).encode() for name, spdx in files.items()}
    return simple_module(path, version, extra_files={**written, **(extra or {})}, time=time)
