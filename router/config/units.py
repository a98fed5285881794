"""Parsing of the units the rules use: durations, byte sizes and rates."""

from __future__ import annotations

import re

from router.core.model import Rate

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `10s`, `5m`, `24h`, `7d` (a bare 0 is accepted as zero)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (use e.g. 10s, 500ms, 5m, 1h)")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 10s, 500ms, 5m, 1h)")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from `256MiB`, `10GiB`, `16KB` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r} (use e.g. 256MiB, 10GiB)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a size: {value!r} (use e.g. 256MiB, 10GiB)")
    return int(float(match.group(1)) * _SIZE_BYTES[match.group(2)])


def parse_rate(value: object) -> Rate:
    """A rate from `100/s`, `600/m`, `1000/h`."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a rate: {value!r} (use e.g. 100/s, 600/m, 1000/h)")
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    amount = float(match.group(1))
    if amount <= 0:
        raise ValueError(f"rate must be positive: {value!r}")
    return Rate(per_second=amount / per, text=str(value).strip())
