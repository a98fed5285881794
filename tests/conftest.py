"""Test-wide guards and fixtures.

No test may reach the internet: every outbound connection from this process
must go to a loopback address (or a Unix socket). The go command runs with
GOPROXY pointing at loopback, GOSUMDB off or at a test checksum DB, and
GOTOOLCHAIN=local, so it has nothing to fetch from outside either.

Names under `.invalid` never resolve (RFC 6761 section 6.4, which asks resolver
libraries to say so at once). glibc still sends the query to the configured DNS
server, which is a network access and, offline, a slow "temporary failure"; so
here getaddrinfo answers those names the way the RFC says, without asking anyone.
Tests use such a name for an upstream whose host does not resolve.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so a CI result repeats; set
# HYPOTHESIS_PROFILE=explore to search new examples while working on a property.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise OSError(f"test tried to reach a non-loopback host: {host!r}") from None
            return
        if not ip.is_loopback:
            raise OSError(f"test tried to reach a non-loopback address: {host}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.rstrip(".").lower().endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]
    socket.getaddrinfo = _guarded_getaddrinfo
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server on a free port, stopped after the test."""
    from support.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A real S3-compatible server (rclone serve s3) on a free port with a fresh bucket and
    fresh credentials in AWS's own files; this process's AWS environment points at them."""
    from support.s3_server import S3Server, use_aws_env

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    use_aws_env(monkeypatch, server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gocache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GOCACHE for every go command of the session (build results only)."""
    return tmp_path_factory.getbasetemp() / "gocache"
