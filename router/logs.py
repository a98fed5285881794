"""Structured logs: one JSON object per line, for events and for access logs.

An access line carries what an operator needs to follow one request (time,
request id, tenant, kind, module, version, route, pool, upstream or cache,
status, bytes, duration, fallbacks tried) and never a token, an
Authorization header or a credential of any kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import select
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.core.model import Rules

ACCESS = logging.getLogger("goproxy_router.access")
ACCESS_BUFFER_LINES = 20_000  # pending access lines at most; beyond, lines are dropped
ACCESS_BATCH_LINES = 512  # written at once when this many are pending ...
ACCESS_FLUSH_SECONDS = 0.05  # ... or this long after the first of a batch
_ACCESS_NAMES = '"logger":"goproxy_router.access","message":"request"'
_RESERVED = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        for key, value in vars(record).items():
            if key not in _RESERVED and key != "fields" and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: str) -> None:
    """JSON lines on stderr for every logger of the gateway."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Malformed requests from clients are answered 400 by aiohttp's parser; a
    # traceback per bad request would only let anyone flood the logs.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


class AccessLog:
    """Access lines, off the request path: a request appends its fields to a bounded
    buffer (sampled; errors always kept), and a callback on the event loop formats and
    writes the buffer in one batch shortly after (or when it fills). The line has the
    shape `JsonFormatter` gives every other log line. A full buffer drops lines and
    counts them rather than growing or slowing requests."""

    def __init__(
        self,
        *,
        enabled: bool,
        sample: float,
        rng: random.Random | None = None,
        write: Callable[[str], object] | None = None,
        limit: int = ACCESS_BUFFER_LINES,
        on_drop: Callable[[], object] = lambda: None,
    ) -> None:
        self.enabled = enabled
        self.sample = sample
        self.dropped = 0
        self._rng = rng or random.Random()
        self._write = write
        self._limit = limit
        self._on_drop = on_drop
        self._pending: list[tuple[float, dict[str, Any]]] = []
        self._scheduled: asyncio.TimerHandle | None = None
        self._encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
        self._second = -1
        self._stamp = ""

    def emit(self, fields: dict[str, Any]) -> None:
        if not self.enabled or not ACCESS.isEnabledFor(logging.INFO):
            return
        sample = self.sample
        if sample < 1.0 and fields.get("status", 0) < 500 and self._rng.random() >= sample:
            return
        pending = self._pending
        if len(pending) >= self._limit:
            self.dropped += 1
            self._on_drop()
            return
        pending.append((time.time(), fields))
        if len(pending) >= ACCESS_BATCH_LINES:
            self.flush()
        elif self._scheduled is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = loop.call_later(ACCESS_FLUSH_SECONDS, self.flush)

    def apply_rules(self, rules: Rules) -> None:
        """A reload's `logging.access` and `logging.sample`."""
        self.enabled = rules.logging.access
        self.sample = rules.logging.sample

    def emit_safely(self, fields: dict[str, Any]) -> None:
        """Like `emit`, but a logging problem never fails the request."""
        try:
            self.emit(fields)
        except Exception:
            logging.getLogger("goproxy_router.logs").exception("access log failed")

    def flush(self) -> None:
        """Write what is pending now (also on shutdown)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            if self._write is None and not _plain_stderr(ACCESS):
                for when, fields in pending:  # handlers someone attached (tests, embedders)
                    record = ACCESS.makeRecord(
                        ACCESS.name, logging.INFO, __file__, 0, "request", (), None,
                        extra={"fields": fields},
                    )  # fmt: skip
                    record.created, record.msecs = when, (when - int(when)) * 1000
                    ACCESS.handle(record)
                return
            lines = [self._line(when, fields) for when, fields in pending]
            if self._write is not None:
                self._write("\n".join(lines) + "\n")
            else:
                _write_stderr(lines)
        except Exception:
            logging.getLogger("goproxy_router.logs").exception("access log failed")

    def _line(self, when: float, fields: dict[str, Any]) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = int((when - second) * 1000)
        head = f'{{"time":"{self._stamp}.{millis:03d}Z","level":"info",{_ACCESS_NAMES}'
        body = self._encode(fields)
        return head + ("," + body[1:] if len(body) > 2 else "}")


def _write_stderr(lines: list[str]) -> None:
    """Lines to stderr in writes of at most PIPE_BUF bytes each, cut at line ends: with
    several workers on one pipe, a write that small is never split by another's."""
    sys.stderr.flush()  # what other loggers wrote first stays first
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8", "replace") + b"\n"
        if chunk and size + len(data) > select.PIPE_BUF:
            _write_all(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        _write_all(b"".join(chunk))


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(2, view) :]


def _plain_stderr(logger: logging.Logger) -> bool:
    """True when access lines would reach only `setup_logging`'s JSON stderr handler, so
    they can be written directly, in the same shape, without a LogRecord each."""
    if logger.handlers or not logger.propagate:
        return False
    handlers = logging.getLogger().handlers
    if len(handlers) != 1 or not isinstance(handlers[0].formatter, JsonFormatter):
        return False
    stream = getattr(handlers[0], "stream", None)
    try:
        return stream is not None and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False  # not a real file (a test's capture): through the handler
