"""Operations: JSON access logs without secrets, trace context, OpenTelemetry spans,
several workers on one port."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
from support.gateway import GatewayProcess, gateway_in_process, one_pool_rules, write_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import Fault, FixtureProxy

from router.appkeys import TRACER
from router.core.tenancy import token_digest
from router.tracing import OtelTracer

LIB = simple_module("example.com/lib", "v1.0.0")
TOKEN = "very-secret-token-value"


def _rules(tmp_path: Path, url: str, **extra: object) -> Path:
    return write_rules(
        tmp_path / "r.yaml",
        [{"name": "up", "url": url}],
        {"main": {"upstreams": ["up"]}},
        default={"pool": "main"},
        tenants=[{"id": "team", "tokens": [token_digest(TOKEN)]}],
        **extra,
    )


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def test_access_log_is_json_and_never_holds_a_secret(tmp_path: Path) -> None:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    try:
        gw = GatewayProcess(_rules(tmp_path, proxy.url))
        gw.wait_ready()
        basic = "Basic " + base64.b64encode(f"team:{TOKEN}".encode()).decode()
        calls = [
            ("/example.com/lib/@v/list", {"Authorization": basic}, 200),
            ("/example.com/lib/@v/v1.0.0.info", {"Authorization": f"Bearer {TOKEN}"}, 200),
            ("/example.com/lib/@v/v1.0.0.info", {"Authorization": f"Bearer {TOKEN}x"}, 401),
            ("/example.com/lib/@v/v9.0.0.zip", {"Authorization": f"Bearer {TOKEN}"}, 404),
            ("/example.com/lib/@v/v1.0.0.zip", {"X-Request-ID": "trace-me-1"}, 200),
        ]
        for path, headers, status in calls:
            assert _get(gw.url + path, headers) == status
        assert gw.stop() == 0
        output = gw.output()
    finally:
        proxy.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    access = [x for x in lines if x["logger"] == "goproxy_router.access"]
    assert len(access) == len(calls)
    assert TOKEN not in output
    assert "Authorization" not in output and "authorization" not in output
    first = access[0]
    for key in (
        "time",
        "request_id",
        "tenant",
        "kind",
        "module",
        "version",
        "route",
        "pool",
        "upstream",
        "status",
        "bytes",
        "duration_ms",
        "fallbacks",
    ):
        assert key in first
    assert (first["tenant"], first["kind"], first["module"], first["status"]) == (
        "team",
        "list",
        "example.com/lib",
        200,
    )
    assert access[2]["status"] == 401
    assert access[4]["request_id"] == "trace-me-1"
    assert access[4]["bytes"] > 0


async def test_traceparent_reaches_the_upstream_with_the_same_trace_id(tmp_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    up = FixtureProxy(ModuleSet([LIB]), name="up")
    async with (
        up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
        aiohttp.ClientSession() as h,
    ):
        headers = {"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=1"}
        async with h.get(gw.url + "/example.com/lib/@v/v1.0.0.mod", headers=headers) as r:
            assert r.status == 200
        async with h.get(
            gw.url + "/example.com/lib/@v/list", headers={"traceparent": "garbage"}
        ) as r:
            assert r.status == 200
    sent = up.requests[0].headers
    version, got_trace, got_parent, flags = sent["traceparent"].split("-")
    assert (version, got_trace, flags) == ("00", trace_id, "01")
    assert got_parent != parent and len(got_parent) == 16
    assert sent["tracestate"] == "vendor=1"
    assert "traceparent" not in up.requests[1].headers  # an invalid one is not forwarded


async def test_opentelemetry_spans_for_request_selection_and_attempts(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with FixtureProxy(ModuleSet([LIB]), name="up") as up:
        up.add_fault(Fault(pattern=r"\.info$", status=404))
        rules = write_rules(
            tmp_path / "r.yaml",
            [{"name": "up", "url": up.url}, {"name": "twin", "url": up.url}],
            {"main": {"upstreams": ["up", "twin"], "mode": "ordered"}},
            default={"pool": "main"},
            tracing={"enabled": True, "endpoint": "http://127.0.0.1:9/v1/traces"},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
            assert gw.app is not None
            tracer = gw.app[TRACER]
            assert isinstance(tracer, OtelTracer)
            exporter = InMemorySpanExporter()
            tracer.provider.add_span_processor(SimpleSpanProcessor(exporter))
            headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
            async with h.get(gw.url + "/example.com/lib/@v/v1.0.0.mod", headers=headers) as r:
                assert r.status == 200
            spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"goproxy.request", "selection", "upstream"} <= names
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in spans)
    upstream_span = next(s for s in spans if s.name == "upstream")
    sent = up.requests[-1].headers["traceparent"]
    assert sent.split("-")[2] == f"{upstream_span.context.span_id:016x}"


def test_two_workers_serve_one_port_report_one_sum_and_drain(tmp_path: Path) -> None:
    proxy = FixtureProxy(ModuleSet([LIB]), name="up").start_in_thread()
    proxy.add_fault(Fault(pattern=r"\.zip$", delay=1.0))
    try:
        gw = GatewayProcess(
            _rules(tmp_path, proxy.url, cache={"memory": 0}), args=["--workers", "2"]
        )
        gw.wait_ready()
        for _ in range(20):
            assert _get(gw.url + "/example.com/lib/@v/v1.0.0.mod") == 200
        with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert (
            'goproxy_router_requests_total{kind="mod",status="2xx",tenant="anonymous"} 20.0' in text
        )
        result: dict[str, int] = {}

        def slow() -> None:
            result["status"] = _get(gw.url + "/example.com/lib/@v/v1.0.0.zip")

        worker = threading.Thread(target=slow)
        worker.start()
        deadline = time.monotonic() + 5
        while not proxy.count(".zip") and time.monotonic() < deadline:
            time.sleep(0.02)
        gw.proc.send_signal(signal.SIGTERM)
        worker.join(10)
        assert result["status"] == 200  # in flight when the drain began
        assert gw.proc.wait(15) == 0
    finally:
        gw.stop()
        proxy.stop()


def test_workers_started_again_serve_the_rules_they_had_reloaded(tmp_path: Path) -> None:
    a = FixtureProxy(ModuleSet([LIB]), name="a").start_in_thread()
    b = FixtureProxy(ModuleSet([LIB]), name="b").start_in_thread()
    rules = tmp_path / "rules.yaml"
    path = f"/{LIB.path}/@v/{LIB.version}.mod"
    try:
        one_pool_rules(rules, {"a": a.url})
        gw = GatewayProcess(rules, args=["--workers", "2"])
        gw.wait_ready()

        def upstreams(n: int) -> set[str]:
            seen = set()
            for _ in range(n):  # a new connection each: both workers answer some
                with urllib.request.urlopen(gw.url + path, timeout=10) as resp:
                    seen.add(resp.headers["X-Router-Upstream"])
            return seen

        assert upstreams(10) == {"a"}
        one_pool_rules(rules, {"b": b.url})  # every worker watches the file
        deadline = time.monotonic() + 30
        while upstreams(10) != {"b"}:
            assert time.monotonic() < deadline, "the workers never reloaded"
        children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children")
        for pid in children.read_text().split():  # both: only started-again ones answer
            os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert upstreams(20) == {"b"}  # not the rules the process started with
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the workers were never started again"
                time.sleep(0.05)
        code = gw.stop(30)
        assert code == 0, gw.output()[-3000:]
    finally:
        gw.stop()
        a.stop()
        b.stop()
