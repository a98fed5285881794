"""Access lines leave the request path: buffered, written in batches, bounded, and in
the same JSON shape as every other log line."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator

import pytest

from router.logs import ACCESS, ACCESS_BATCH_LINES, AccessLog, JsonFormatter


@pytest.fixture
def plain_stderr() -> Iterator[None]:
    """Logging as `setup_logging` leaves it: one JSON handler on the root logger."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    ACCESS.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _fields(i: int, status: int = 200) -> dict[str, object]:
    return {"request_id": f"r{i}", "status": status, "module": "example.com/m", "bytes": i}


async def test_lines_are_written_together_after_the_requests(plain_stderr: None) -> None:
    out: list[str] = []
    log = AccessLog(enabled=True, sample=1.0, write=out.append)
    for i in range(3):
        log.emit(_fields(i))
    assert out == []  # nothing on the request path
    await asyncio.sleep(0.2)  # the batch is written from the event loop
    assert len(out) == 1
    lines = [json.loads(x) for x in out[0].splitlines()]
    assert [x["request_id"] for x in lines] == ["r0", "r1", "r2"]


async def test_a_line_has_the_shape_of_every_other_log_line(plain_stderr: None) -> None:
    out: list[str] = []
    log = AccessLog(enabled=True, sample=1.0, write=out.append)
    log.emit(_fields(7))
    log.flush()
    line = json.loads(out[0])
    record = ACCESS.makeRecord(ACCESS.name, logging.INFO, __file__, 0, "request", (), None)
    record.fields = _fields(7)
    expected = json.loads(JsonFormatter().format(record))
    assert list(line) == list(expected)
    assert {k: v for k, v in line.items() if k != "time"} == {
        k: v for k, v in expected.items() if k != "time"
    }
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-01-01T00:00:00.000Z")


async def test_a_full_batch_is_written_at_once(plain_stderr: None) -> None:
    out: list[str] = []
    log = AccessLog(enabled=True, sample=1.0, write=out.append)
    for i in range(ACCESS_BATCH_LINES):
        log.emit(_fields(i))
    assert len(out) == 1 and len(out[0].splitlines()) == ACCESS_BATCH_LINES


async def test_the_buffer_is_bounded_and_drops_are_counted(plain_stderr: None) -> None:
    out: list[str] = []
    drops: list[None] = []
    log = AccessLog(
        enabled=True, sample=1.0, write=out.append, limit=5, on_drop=lambda: drops.append(None)
    )
    for i in range(8):
        log.emit(_fields(i))
    assert log.dropped == 3 and len(drops) == 3
    log.flush()
    assert len(out[0].splitlines()) == 5


def test_sampling_keeps_every_error(plain_stderr: None) -> None:
    out: list[str] = []
    log = AccessLog(enabled=True, sample=0.0, rng=random.Random(1), write=out.append)
    log.emit(_fields(1, 200))
    log.emit(_fields(2, 502))
    log.flush()
    assert [json.loads(x)["request_id"] for x in out[0].splitlines()] == ["r2"]


def test_attached_handlers_get_records_with_their_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS.name)
    log = AccessLog(enabled=True, sample=1.0)
    log.emit(_fields(3))
    log.flush()
    got = [r for r in caplog.records if r.name == ACCESS.name]
    assert [r.fields for r in got] == [_fields(3)]  # type: ignore[attr-defined]
