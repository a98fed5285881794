"""A small real file system for fault tests: a tmpfs of a given size (needs root).

Writes past its size fail with ENOSPC, like a full disk under the artifact store.
Tests are skipped, saying why, where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `where` for the duration of the block."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Fill `fs` until only about `leave` bytes are free; returns the filler file."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler"
    with filler.open("wb") as fh:
        remaining = max(0, free - leave)
        block = b"\0" * (1 << 16)
        while remaining > 0:
            n = min(len(block), remaining)
            fh.write(block[:n])
            remaining -= n
    return filler


def used_bytes(root: Path) -> int:
    """Bytes of every regular file under `root` (files may vanish while counting)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total
