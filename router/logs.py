"""Structured logs: one JSON object per line, for events and for access logs.

An access line carries what an operator needs to follow one request (time,
request id, tenant, kind, module, version, route, pool, upstream or cache,
status, bytes, duration, fallbacks tried) and never a token, an
Authorization header or a credential of any kind.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from typing import Any

ACCESS = logging.getLogger("goproxy_router.access")
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
    """Decides which requests get an access line (sampling; errors always do)."""

    def __init__(self, *, enabled: bool, sample: float, rng: random.Random | None = None) -> None:
        self.enabled = enabled
        self.sample = sample
        self._rng = rng or random.Random()

    def emit(self, fields: dict[str, Any]) -> None:
        if not self.enabled or not ACCESS.isEnabledFor(logging.INFO):
            return
        status = int(fields.get("status", 0))
        if status < 500 and self.sample < 1.0 and self._rng.random() >= self.sample:
            return
        ACCESS.info("request", extra={"fields": fields})

    def emit_safely(self, fields: dict[str, Any]) -> None:
        """Like `emit`, but a logging problem never fails the request."""
        try:
            self.emit(fields)
        except Exception:
            logging.getLogger("goproxy_router.logs").exception("access log failed")
