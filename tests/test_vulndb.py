"""The offline vulnerability database: a generated database in the real layout on disk."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.vulndb import Vuln, write_vulndb

from router.core.policy import (
    DatabaseUnavailable,
    Policy,
    VulnerabilityRule,
    judge_vulnerabilities,
)
from router.vulndb import VulnDatabase, VulnDatabases, VulnDBError, load

M = "example.com/m"
VULNS = [
    Vuln("GO-2024-1234", M, (("0", "1.2.4"),), aliases=("CVE-2024-1111",)),
    Vuln("GO-2024-2000", M, (("1.3.0", "1.3.2"), ("2.0.0", ""))),
    Vuln("GO-2023-0100", "example.com/other", (("0", "0.5.0"),)),
    Vuln("GO-2022-0001", M, (("0", ""),), withdrawn=datetime(2022, 3, 1, tzinfo=UTC)),
]
POLICY = Policy("tenant t", vulnerabilities=VulnerabilityRule("db", (), "tenant t"))


def _bump(root: Path, when: datetime) -> None:
    """Rewrite db.json with a new modified time and a new mtime, as a fresh copy would."""
    (root / "index" / "db.json").write_text(json.dumps({"modified": when.isoformat()}))
    stamp = when.timestamp()
    os.utime(root / "index" / "db.json", (stamp, stamp))


def test_a_generated_database_loads_by_module(tmp_path: Path) -> None:
    snapshot = load(write_vulndb(tmp_path, VULNS))
    assert snapshot.modified == "2024-06-01T00:00:00Z"
    assert (snapshot.entries, snapshot.withdrawn) == (4, 1)
    ids = [a.id for a in snapshot.advisories(M)]
    assert ids == ["GO-2024-1234", "GO-2024-2000"]  # the withdrawn entry is skipped
    assert snapshot.advisories("example.com/none") == ()
    first = snapshot.advisories(M)[0]
    assert first.aliases == ("CVE-2024-1111",)


@pytest.mark.parametrize(
    ("version", "refused", "evidence"),
    [
        ("v1.2.3", True, "GO-2024-1234 affects v1.2.3, fixed in v1.2.4"),
        ("v1.2.4", False, ""),
        ("v1.3.1", True, "GO-2024-2000 affects v1.3.1, fixed in v1.3.2"),
        ("v1.3.2", False, ""),
        ("v2.1.0", True, "GO-2024-2000 affects v2.1.0, no fixed version"),
    ],
)
def test_the_policy_on_the_loaded_database(
    tmp_path: Path, version: str, refused: bool, evidence: str
) -> None:
    db = VulnDatabase(write_vulndb(tmp_path, VULNS))
    assert db.refresh()
    verdict = judge_vulnerabilities(POLICY, M, version, db.lookup(M))
    assert verdict.refused == refused
    assert verdict.reason == evidence


def test_reload_when_db_json_changes_and_only_then(tmp_path: Path) -> None:
    db = VulnDatabase(write_vulndb(tmp_path, VULNS[:1]))
    assert db.refresh()
    assert not db.refresh()  # nothing changed: one stat, no load
    write_vulndb(tmp_path, VULNS, modified=datetime(2024, 7, 1, tzinfo=UTC))
    _bump(tmp_path, datetime(2024, 7, 1, tzinfo=UTC))
    assert db.refresh()
    assert [a.id for a in db.lookup(M)] == ["GO-2024-1234", "GO-2024-2000"]  # type: ignore[union-attr]


def test_a_missing_database_fails_closed(tmp_path: Path) -> None:
    db = VulnDatabase(tmp_path / "nowhere")
    assert not db.refresh()
    down = db.lookup(M)
    assert isinstance(down, DatabaseUnavailable)
    assert down.reason.endswith("index/db.json: no such file")
    assert judge_vulnerabilities(POLICY, M, "v9.9.9", down).refused
    assert isinstance(VulnDatabase(tmp_path).lookup(M), DatabaseUnavailable)  # never loaded


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "index" / "modules.json").write_text("{nope"), "modules.json: not JSON"),
        (lambda r: (r / "ID" / "GO-2024-1234.json").unlink(), "GO-2024-1234.json: no such file"),
        (lambda r: (r / "index" / "db.json").write_text("[]"), "db.json: no modified time"),
        (lambda r: (r / "index" / "modules.json").write_text('[{"path": "x"}]'), "no vulns list"),
        (
            lambda r: (r / "index" / "modules.json").write_text(
                '[{"path": "x", "vulns": [{"id": "../../etc/passwd"}]}]'
            ),
            "bad entry id",
        ),
    ],
)
def test_a_broken_database_names_the_problem(tmp_path: Path, damage: object, message: str) -> None:
    write_vulndb(tmp_path, VULNS)
    damage(tmp_path)  # type: ignore[operator]
    with pytest.raises(VulnDBError, match=message.replace(".", r"\.")):
        load(tmp_path)


def test_a_failed_reload_keeps_the_last_good_database(tmp_path: Path) -> None:
    db = VulnDatabase(write_vulndb(tmp_path, VULNS))
    assert db.refresh()
    (tmp_path / "ID" / "GO-2024-2000.json").write_text("{half a file")
    _bump(tmp_path, datetime(2024, 8, 1, tzinfo=UTC))
    assert not db.refresh()
    assert "GO-2024-2000.json: not JSON" in db.error
    assert len(db.lookup(M)) == 2  # type: ignore[arg-type]
    write_vulndb(tmp_path, VULNS, modified=datetime(2024, 8, 2, tzinfo=UTC))
    _bump(tmp_path, datetime(2024, 8, 2, tzinfo=UTC))
    assert db.refresh() and db.error == ""


def test_entries_without_ranges_and_other_ecosystems(tmp_path: Path) -> None:
    write_vulndb(tmp_path, [Vuln("GO-2024-3000", M)])
    entry = json.loads((tmp_path / "ID" / "GO-2024-3000.json").read_text())
    entry["affected"][0]["ranges"] = []
    entry["affected"].append({"package": {"name": M, "ecosystem": "npm"}, "ranges": []})
    (tmp_path / "ID" / "GO-2024-3000.json").write_text(json.dumps(entry))
    (advisory,) = load(tmp_path).advisories(M)
    assert judge_vulnerabilities(POLICY, M, "v0.0.1", (advisory,)).refused  # every version


async def test_the_registry_refreshes_in_the_background(tmp_path: Path) -> None:
    registry = VulnDatabases()
    db = registry.get(str(write_vulndb(tmp_path / "a", VULNS)))
    assert registry.get(str(tmp_path / "a")) is db
    ticks = 0

    async def sleep(_: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await registry.run(interval=0.01, sleep=sleep)
    assert db.snapshot is not None
    registry.keep_only(set())
    assert registry.all() == []
