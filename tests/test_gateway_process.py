"""The gateway as a real process: bounded memory on huge zips, graceful drain, bad rules."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support.gateway import GatewayProcess, gateway_process, one_pool_rules
from support.gomod import ModuleSet, hash_zip, large_module, simple_module, write_zip
from support.goproxy_server import Fault, FixtureProxy

BIG_BYTES = 200 << 20


@pytest.mark.slow
def test_200mb_zip_streams_with_bounded_memory(tmp_path: Path) -> None:
    big = large_module("example.com/big", "v1.0.0", BIG_BYTES)
    expected = hashlib.sha256(write_zip(big, tmp_path / "expected.zip").read_bytes()).hexdigest()
    proxy = FixtureProxy(ModuleSet([big]), name="big", zip_dir=tmp_path / "zips").start_in_thread()
    try:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"origin": proxy.url})
        with gateway_process(rules) as gw:
            baseline = gw.rss_bytes()
            peak = baseline
            digest = hashlib.sha256()
            received = 0
            url = f"{gw.url}/example.com/big/@v/v1.0.0.zip"
            with urllib.request.urlopen(url, timeout=60) as resp:
                assert resp.status == 200
                length = int(resp.headers["Content-Length"])
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    received += len(chunk)
                    if received % (16 << 20) < (1 << 20):
                        peak = max(peak, gw.rss_bytes())
            peak = max(peak, gw.rss_bytes())
        assert received == length >= BIG_BYTES
        assert digest.hexdigest() == expected
        growth = peak - baseline
        print(f"gateway RSS growth while streaming {received >> 20} MiB: {growth >> 20} MiB")
        assert growth < 50 << 20, f"gateway RSS grew by {growth >> 20} MiB"
    finally:
        proxy.stop()


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    lib = simple_module("example.com/lib", "v0.1.0")
    proxy = FixtureProxy(ModuleSet([lib]), name="slow").start_in_thread()
    proxy.add_fault(Fault(pattern=r"\.zip$", delay=1.5))
    try:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"origin": proxy.url})
        gw = GatewayProcess(rules)
        gw.wait_ready()
        result: dict[str, object] = {}

        def download() -> None:
            with urllib.request.urlopen(f"{gw.url}/example.com/lib/@v/v0.1.0.zip", timeout=10) as r:
                result["status"] = r.status
                result["body"] = r.read()

        worker = threading.Thread(target=download)
        worker.start()
        deadline = time.monotonic() + 5
        while not proxy.count(".zip") and time.monotonic() < deadline:
            time.sleep(0.02)
        gw.proc.send_signal(signal.SIGTERM)
        worker.join(10)
        assert gw.proc.wait(10) == 0
        assert result["status"] == 200
        assert isinstance(result["body"], bytes)
        assert hash_zip(result["body"]).startswith("h1:")
    finally:
        gw.stop()
        proxy.stop()


def test_serve_refuses_invalid_rules_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nupstreams: [{name: a, url: 'ftp://x'}]\npools: {}\n")
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--rules", str(bad), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"{bad}:2: not an http(s) URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_and_hash_token_commands(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "router", "validate", "rules"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    token = subprocess.run(
        [sys.executable, "-m", "router", "hash-token"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert token.stdout.strip() == "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
