"""goauth-goproxy-router: a GOAUTH command (Go 1.24+) that tells goproxy-router who
is asking, with which go command, for which CI job.

The Python twin of ``scripts/goauth-goproxy-router`` (a POSIX sh script, for clients
without Python): the same configuration, the same output byte for byte, the same
messages and exit codes; ``tests/test_goauth.py`` runs one table against both. Installed
as the ``goauth-goproxy-router`` console script, or run as ``python -m router.goauth``.

It prints, for the gateway's URL prefix, the headers the go command then sends with
every HTTPS request under that prefix (see ``go help goauth``)::

    https://goproxy.example.com

    Authorization: Bearer TOKEN          (Basic TENANT:TOKEN when a tenant is set)
    X-Go-Version: go1.24.2               (the go command's own version)
    X-CI-Job-ID: 1234567890-1            (from the CI's variables)

Configuration (environment):

- ``GOPROXY_ROUTER_URL``: the gateway's URL prefix(es), https:// only, separated by
  spaces; default: the first entry of GOPROXY.
- ``GOPROXY_ROUTER_TOKEN_FILE``: a file whose contents are the token (read on every
  run, so a rotated token is picked up on the retry).
- ``GOPROXY_ROUTER_TOKEN``: the token itself (not both of these).
- ``GOPROXY_ROUTER_TENANT``: send ``Basic TENANT:TOKEN`` instead of ``Bearer TOKEN``.
- ``GOPROXY_ROUTER_JOB_ID``: the X-CI-Job-ID to send (set but empty: send none);
  unset: the first set of ``GITHUB_RUN_ID[-GITHUB_RUN_ATTEMPT]``, ``CI_JOB_ID``,
  ``BUILDKITE_JOB_ID``, ``CIRCLE_WORKFLOW_JOB_ID``, ``SYSTEM_JOBID``, ``BUILD_TAG``,
  ``TRAVIS_JOB_ID``.

The protocol: the go command runs this once with no argument before its first HTTPS
request. After any 4xx answer it runs it again with the URL as argument and the
response's status line and headers on stdin, retries that request once with what it
printed, and keeps using that from then on. Nothing here loops or waits: every run
reads the current configuration and prints. The token is never written anywhere but
stdout.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

__all__ = ["GoauthError", "credentials", "main"]

PROG = "goauth-goproxy-router"
# The bytes the sh script trims and refuses, spelled out there the same way.
WHITESPACE = " \t\n\v\f\r"
_CONTROL = frozenset([*range(0x20), 0x7F])
# Where X-CI-Job-ID comes from when GOPROXY_ROUTER_JOB_ID is unset: the first one set.
JOB_VARIABLES = (
    "GITHUB_RUN_ID",  # GitHub Actions (GITHUB_RUN_ATTEMPT appended)
    "CI_JOB_ID",  # GitLab CI
    "BUILDKITE_JOB_ID",  # Buildkite
    "CIRCLE_WORKFLOW_JOB_ID",  # CircleCI
    "SYSTEM_JOBID",  # Azure Pipelines
    "BUILD_TAG",  # Jenkins
    "TRAVIS_JOB_ID",  # Travis CI
)
PUBLIC_PROXY = ("https://proxy.golang.org", "https://proxy.golang.org/")


class GoauthError(Exception):
    """A configuration the helper refuses; the message never holds the token."""


def _trim(value: str) -> str:
    return value.strip(WHITESPACE)


def _has_control(value: str) -> bool:
    return any(ord(c) in _CONTROL for c in value)


def _go_env(name: str, env: Mapping[str, str]) -> str:
    """The go command's idea of `name`, for when this is run by hand (the go command
    exports GOVERSION, GOPROXY and the rest to GOAUTH commands). GOTOOLCHAIN=local:
    never switch toolchains (a download would run GOAUTH again)."""
    go = shutil.which("go", path=env.get("PATH"))
    if go is None:
        return ""
    try:
        done = subprocess.run(
            [go, "env", name],
            env={**env, "GOTOOLCHAIN": "local", "GOFLAGS": ""},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except OSError:
        return ""
    return done.stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def _drain_response(stdin: BinaryIO) -> None:
    """Read what the go command writes on a retry (the failed response's status line and
    headers, then a blank line) up to that blank line or the end. The status does not
    matter: the answer is the first run's, from the current configuration."""
    while True:
        line = stdin.readline()
        if not line.endswith(b"\n") or not line.rstrip(b"\n").rstrip(b"\r"):
            return


def _prefixes(env: Mapping[str, str]) -> list[str]:
    configured = _trim(env.get("GOPROXY_ROUTER_URL", ""))
    if not configured:
        proxy = env.get("GOPROXY", "") or _go_env("GOPROXY", env)
        first = _trim(proxy.replace("|", ",").split(",", 1)[0])
        if first in PUBLIC_PROXY:
            raise GoauthError(
                f"GOPROXY starts with {first}, not a goproxy-router: "
                "set GOPROXY to the gateway or GOPROXY_ROUTER_URL"
            )
        if first.startswith("http://"):
            raise GoauthError(
                f"GOPROXY starts with {first}: the go command sends GOAUTH headers over https only"
            )
        if not (first.startswith("https://") and len(first) > len("https://")):
            raise GoauthError(
                "no gateway URL: set GOPROXY_ROUTER_URL, or GOPROXY to https://your-gateway"
            )
        configured = first
    # Split where sh splits (IFS: space, tab, newline), not on every Unicode space.
    prefixes = [p for p in configured.replace("\t", " ").replace("\n", " ").split(" ") if p]
    for prefix in prefixes:
        if _has_control(prefix):  # first: a control character is never echoed
            raise GoauthError("GOPROXY_ROUTER_URL holds a control character")
        if not (prefix.startswith("https://") and len(prefix) > len("https://")):
            raise GoauthError(
                f"GOPROXY_ROUTER_URL: {prefix} is not an https:// URL "
                "(GOAUTH headers go over https only)"
            )
    return prefixes


def _authorization(env: Mapping[str, str]) -> str:
    token = where = ""
    token_file = env.get("GOPROXY_ROUTER_TOKEN_FILE", "")
    if token_file:
        if env.get("GOPROXY_ROUTER_TOKEN", ""):
            raise GoauthError("set GOPROXY_ROUTER_TOKEN or GOPROXY_ROUTER_TOKEN_FILE, not both")
        try:
            with open(token_file, "rb") as fh:
                contents = fh.read().decode("utf-8", "surrogateescape")
        except OSError:
            raise GoauthError(f"cannot read the token file {token_file}") from None
        token = _trim(contents)
        if not token:
            raise GoauthError(f"the token file {token_file} is empty")
        where = f"the token file {token_file}"
    elif env.get("GOPROXY_ROUTER_TOKEN", ""):
        token = _trim(env["GOPROXY_ROUTER_TOKEN"])
        where = "GOPROXY_ROUTER_TOKEN"
    if not token:
        return ""
    if _has_control(token):
        raise GoauthError(f"{where} holds more than one line or a control character")
    tenant = env.get("GOPROXY_ROUTER_TENANT", "")
    if not tenant:
        return f"Bearer {token}"
    if ":" in tenant:
        raise GoauthError("GOPROXY_ROUTER_TENANT must not contain ':'")
    if _has_control(tenant):
        raise GoauthError("GOPROXY_ROUTER_TENANT holds a control character")
    pair = f"{tenant}:{token}".encode("utf-8", "surrogateescape")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _job(env: Mapping[str, str]) -> str:
    if "GOPROXY_ROUTER_JOB_ID" in env:
        job = env["GOPROXY_ROUTER_JOB_ID"]
    else:
        job = ""
        for name in JOB_VARIABLES:
            if env.get(name, ""):
                job = env[name]
                if name == "GITHUB_RUN_ID" and env.get("GITHUB_RUN_ATTEMPT", ""):
                    job += "-" + env["GITHUB_RUN_ATTEMPT"]
                break
    job = _trim(job)
    return "" if _has_control(job) else job


def credentials(env: Mapping[str, str]) -> str:
    """The GOAUTH answer for `env`: one credential set, or "" when there is nothing to
    send. The same on the first run and on a retry."""
    prefixes = _prefixes(env)
    authorization = _authorization(env)
    go_version = _trim(env.get("GOVERSION", "") or _go_env("GOVERSION", env))
    if _has_control(go_version):
        go_version = ""
    job = _job(env)
    if not (authorization or go_version or job):
        return ""
    lines = [*prefixes, ""]
    for name, value in (
        ("Authorization", authorization),
        ("X-Go-Version", go_version),
        ("X-CI-Job-ID", job),
    ):
        if value:
            lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run as the go command does: no argument, or the URL of a 4xx answer with the
    response on stdin. Prints the credentials; 1 with a message on a refusal."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 1 and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(args) > 1:
        print(
            f"{PROG}: usage: {PROG} [URL] (run by the go command through GOAUTH; see --help)",
            file=sys.stderr,
        )
        return 1
    if args and args[0] and sys.stdin is not None and not sys.stdin.isatty():
        _drain_response(sys.stdin.buffer)
    try:
        answer = credentials(os.environ)
    except GoauthError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(answer.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
