"""The command line as a person meets it: help that tells every default, and commands
that stop quietly when their reader goes away (`goproxy-router ... | head -1`)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router import cli

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


def test_serve_help_says_what_rules_defaults_to() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "--rules RULES rules file or folder, relative to the current directory " in text
    assert "(default: rules)" in text
    assert "--listen LISTEN HOST:PORT (default: the rules' listen, else 0.0.0.0:8080)" in text


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of `parser`, with the words that name it."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_every_flag_of_every_command_tells_its_default() -> None:
    missing = []
    for words, parser in _commands(cli._parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._expand_help(action)
            if "(default: " not in shown:
                missing.append(f"{' '.join(words)} {action.option_strings[0]}: {shown!r}")
    assert missing == []
