"""Access security: hardened request handling, mutual TLS, upstream credentials."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.gateway import GatewayProcess, write_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy

LIB = simple_module("example.com/lib", "v1.0.0")
UPSTREAM_TOKEN = "upstream-bearer-secret-123"


def _raw(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


@pytest.fixture
def plain_gateway(tmp_path: Path) -> Any:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    rules = write_rules(
        tmp_path / "r.yaml",
        [{"name": "up", "url": proxy.url}],
        {"main": {"upstreams": ["up"]}},
        default={"pool": "main"},
        server={"header_timeout": "1s", "max_header_bytes": "4KiB", "max_connections": 20},
    )
    gw = GatewayProcess(rules)
    gw.wait_ready()
    try:
        yield gw, proxy
    finally:
        gw.stop()
        proxy.stop()


def test_hostile_request_lines_never_reach_an_upstream(plain_gateway: Any) -> None:
    gw, proxy = plain_gateway
    cases = {
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n": (b"405", b"400"),
        b"GET http://evil.example/example.com/lib/@v/list HTTP/1.1\r\nHost: x\r\n\r\n": (b"400",),
        b"POST /example.com/lib/@v/list HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc": (
            b"405",
        ),
        b"GET /example.com/lib/@v/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n": (b"400",),
        b"GET /example.com/lib/@v/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n": (b"400",),
    }
    for request, statuses in cases.items():
        reply = _raw(gw.port, request)
        assert reply.split(b" ", 2)[1] in statuses, (request, reply[:80])
        assert b"Traceback" not in reply
    assert [r for r in proxy.requests if "/@v/" in r.path] == []


def test_oversized_head_is_431(plain_gateway: Any) -> None:
    gw, proxy = plain_gateway
    big = b"GET /example.com/lib/@v/list HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    reply = _raw(gw.port, big)
    assert reply.startswith(b"HTTP/1.1 431")
    many = b"GET /example.com/lib/@v/list HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 1000 + b"\r\n"
    assert _raw(gw.port, many).startswith(b"HTTP/1.1 431")
    assert [r for r in proxy.requests if "/@v/" in r.path] == []


def test_slow_loris_is_closed_while_others_are_served(plain_gateway: Any) -> None:
    gw, _ = plain_gateway
    slow = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    slow.sendall(b"GET /example.com/lib/@v/list HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(5):  # meanwhile normal requests are served
        with urllib.request.urlopen(gw.url + "/example.com/lib/@v/list", timeout=5) as r:
            assert r.status == 200
    try:
        while time.monotonic() - started < 3:
            slow.sendall(b"X-Drip: 1\r\n")  # never finishes the head
            time.sleep(0.2)
        closed = False
    except OSError:
        closed = True
    if not closed:
        slow.settimeout(1)
        closed = slow.recv(1) == b""
    slow.close()
    assert closed
    assert 0.9 <= time.monotonic() - started < 3.5


def test_connection_cap(plain_gateway: Any) -> None:
    gw, _ = plain_gateway
    held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(20)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=2) as extra:
            reply = extra.recv(4096)  # refused before it could even ask
        assert reply.startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    with urllib.request.urlopen(gw.url + "/healthz", timeout=5) as r:
        assert r.status == 200


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    other_ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    out: dict[str, Any] = {"ca": ca, "dir": tmp_path}
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    for name, issuer in (("finance-ci", ca), ("someone-else", ca), ("finance-ci-forged", other_ca)):
        cn = "finance-ci" if name == "finance-ci-forged" else name
        cert = issuer.issue_cert(cn, common_name=cn)
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / f"{name}.pem"))
    return out


def _mtls_gateway(
    tmp_path: Path, pki: dict[str, Any], proxy: FixtureProxy, mode: str
) -> GatewayProcess:
    d = pki["dir"]
    rules = write_rules(
        tmp_path / f"mtls-{mode}.yaml",
        [{"name": "up", "url": proxy.url}, {"name": "fin", "url": proxy.url, "public": False}],
        {"main": {"upstreams": ["up"]}, "finance": {"upstreams": ["fin"]}},
        default={"pool": "main"},
        tls={
            "cert": str(d / "server.pem"),
            "key": str(d / "server.pem"),
            "client_ca": str(d / "ca.pem"),
            "client_auth": mode,
        },
        tenants=[
            {
                "id": "finance",
                "pool": "finance",
                "client_certs": ["finance-ci"],
                "tokens": ["sha256:" + "1" * 64],
            }
        ],
    )
    gw = GatewayProcess(rules, scheme="https")
    return gw


def _client_ctx(pki: dict[str, Any], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki["dir"] / f"{cert}.pem"))
    return ctx


def _https(
    url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            r.read()
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, dict(exc.headers)


def test_mutual_tls_require(tmp_path: Path, pki: dict[str, Any]) -> None:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    gw = _mtls_gateway(tmp_path, pki, proxy, "require")
    try:
        gw.wait_ready(ssl_context=_client_ctx(pki, "finance-ci"))
        url = gw.url + "/example.com/lib/@v/v1.0.0.info"
        status, headers = _https(url, _client_ctx(pki, "finance-ci"))
        assert status == 200 and headers["X-Router-Upstream"] == "fin"  # the finance tenant
        status, headers = _https(url, _client_ctx(pki, "someone-else"))
        assert status == 200 and headers["X-Router-Upstream"] == "up"  # valid, but no tenant
        status, _ = _https(url, _client_ctx(pki, "finance-ci"), {"X-Tenant-ID": "other"})
        assert status == 403  # a header contradicting the certificate
        for cert in (None, "finance-ci-forged"):  # no certificate; a certificate from another CA
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                _https(url, _client_ctx(pki, cert))
    finally:
        gw.stop()
        proxy.stop()


def test_mutual_tls_optional_still_serves_without_a_certificate(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    gw = _mtls_gateway(tmp_path, pki, proxy, "optional")
    try:
        gw.wait_ready(ssl_context=_client_ctx(pki, None))
        url = gw.url + "/example.com/lib/@v/v1.0.0.info"
        assert _https(url, _client_ctx(pki, None))[1]["X-Router-Upstream"] == "up"
        assert _https(url, _client_ctx(pki, "finance-ci"))[1]["X-Router-Upstream"] == "fin"
    finally:
        gw.stop()
        proxy.stop()


def test_upstream_behind_a_token_and_a_private_ca(tmp_path: Path, monkeypatch: Any) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "corp-ca.pem"))
    athens = FixtureProxy(
        ModuleSet([LIB]),
        name="athens",
        ssl_context=server_ctx,
        required_headers={"Authorization": f"Bearer {UPSTREAM_TOKEN}"},
    ).start_in_thread()
    other = FixtureProxy(ModuleSet([LIB]), name="other").start_in_thread()
    rules = write_rules(
        tmp_path / "r.yaml",
        [
            {
                "name": "athens",
                "url": athens.url,
                "public": False,
                "auth": {"bearer_env": "CORP_ATHENS_TOKEN"},
                "tls": {"ca": str(tmp_path / "corp-ca.pem")},
            },
            {"name": "other", "url": other.url},
        ],
        {"main": {"upstreams": ["athens", "other"], "mode": "ordered"}},
        default={"pool": "main"},
        cache={"memory": 0},
    )
    gw = GatewayProcess(rules, env={"CORP_ATHENS_TOKEN": UPSTREAM_TOKEN})
    try:
        gw.wait_ready()
        seen: list[str] = []
        for path in (
            "/example.com/lib/@v/v1.0.0.zip",
            "/example.com/lib/@v/list",
            "/example.com/nothere/@v/list",
            "/metrics",
            "/debug/upstreams",
        ):
            req = urllib.request.Request(gw.url + path)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    seen.append(str(dict(r.headers)) + r.read().decode(errors="replace"))
            except urllib.error.HTTPError as exc:
                seen.append(str(dict(exc.headers)) + exc.read().decode(errors="replace"))
        assert athens.count(".zip") == 1  # served by the private upstream, with its token
        debug = json.loads(
            seen[-1].split("}", 1)[1] if False else seen[-1][seen[-1].index('{"weights"') :]
        )
        assert "athens" in debug["upstreams"]
    finally:
        gw.stop()
        athens.stop()
        other.stop()
    logs = gw.output()
    everything = "\n".join(seen) + logs
    assert UPSTREAM_TOKEN not in everything
    assert all(r.headers.get("Authorization") is None for r in other.requests)  # only to athens
    assert all(
        r.headers.get("Authorization") == f"Bearer {UPSTREAM_TOKEN}"
        for r in athens.requests
        if "/@v/" in r.path
    )


def test_missing_upstream_secret_fails_closed_with_a_clear_reason(tmp_path: Path) -> None:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    rules = write_rules(
        tmp_path / "r.yaml",
        [{"name": "athens", "url": proxy.url, "auth": {"bearer_env": "NOT_SET_ANYWHERE_X"}}],
        {"main": {"upstreams": ["athens"]}},
        default={"pool": "main"},
    )
    gw = GatewayProcess(rules)
    try:
        gw.wait_ready()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(gw.url + "/example.com/lib/@v/list", timeout=5)
        body = err.value.read().decode()
        assert err.value.code == 502 and "credentials" in body
        assert proxy.requests == []
    finally:
        gw.stop()
        proxy.stop()
