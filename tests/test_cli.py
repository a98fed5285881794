"""The command line as a person meets it: commands that stop quietly when their reader
goes away (`goproxy-router ... | head -1`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parents[1]
BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for `yes | head -1`


def _run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with stdout a pipe whose reader is already gone (what `head -1` leaves
    behind once it has its line), so the first write that reaches it fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "router", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "golang.org/x/mod@v0.20.0"],
        ["validate", "rules"],
        ["schema"],
        ["hash-token", "a-token"],
    ],
    ids=" ".join,
)
def test_a_closed_output_ends_the_command_quietly(args: list[str]) -> None:
    done = _run_into_closed_pipe(*args)
    assert (done.stderr.decode(), done.returncode) == ("", BROKEN_PIPE)


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"]], ids=" ".join)
def test_help_into_a_closed_output_is_quiet(args: list[str]) -> None:
    done = _run_into_closed_pipe(*args)
    assert done.stderr.decode() == ""
    assert done.returncode in (0, BROKEN_PIPE)  # argparse itself ignores a failed write


def test_commands_talking_to_redis_end_quietly_too(redis_server: Any) -> None:
    for args in (
        ["cost", "list", "--redis", redis_server.url],
        ["purge", "example.com/lib", "--redis", redis_server.url],
    ):
        done = _run_into_closed_pipe(*args)
        assert (done.stderr.decode(), done.returncode) == ("", BROKEN_PIPE), args


def test_head_reads_the_first_line_and_nothing_else_is_said() -> None:
    done = subprocess.run(
        f"{sys.executable} -m router schema | head -1",
        shell=True,
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    assert (done.stdout, done.stderr) == (b"{\n", b"")
