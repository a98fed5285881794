"""A Go vulnerability database generated on disk, in the layout vuln.go.dev serves and
`govulncheck -db file://DIR` reads: index/db.json, index/modules.json, index/vulns.json and
one OSV entry per ID/<id>.json (schema 1.3.1, the fields the Go database fills)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .gomod import format_time

__all__ = ["Vuln", "write_vulndb"]

DEFAULT_MODIFIED = datetime(2024, 6, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Vuln:
    """One advisory. `ranges` are lists of (introduced, fixed) pairs per affected module,
    OSV style: versions without the leading v, "0" for from the start, fixed "" for none."""

    id: str
    module: str
    ranges: Sequence[tuple[str, str]] = (("0", ""),)
    aliases: Sequence[str] = ()
    summary: str = "A fixture vulnerability"
    withdrawn: datetime | None = None
    published: datetime = DEFAULT_MODIFIED
    modified: datetime = DEFAULT_MODIFIED
    extra_events: Sequence[dict[str, str]] = field(default=())

    def events(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for introduced, fixed in self.ranges:
            out.append({"introduced": introduced})
            if fixed:
                out.append({"fixed": fixed})
        return out + list(self.extra_events)

    def osv(self) -> dict[str, Any]:
        """The OSV entry, as the Go database writes it."""
        entry: dict[str, Any] = {
            "schema_version": "1.3.1",
            "id": self.id,
            "modified": format_time(self.modified),
            "published": format_time(self.published),
            "aliases": list(self.aliases),
            "summary": self.summary,
            "details": f"{self.summary} in {self.module}.",
            "affected": [
                {
                    "package": {"name": self.module, "ecosystem": "Go"},
                    "ranges": [{"type": "SEMVER", "events": self.events()}],
                    "ecosystem_specific": {"imports": [{"path": self.module}]},
                }
            ],
            "references": [{"type": "FIX", "url": f"https://{self.module}/fix/{self.id}"}],
            "database_specific": {
                "url": f"https://pkg.go.dev/vuln/{self.id}",
                "review_status": "REVIEWED",
            },
        }
        if self.withdrawn is not None:
            entry["withdrawn"] = format_time(self.withdrawn)
        return entry

    def last_fixed(self) -> str:
        fixes = [fixed for _, fixed in self.ranges if fixed]
        return fixes[-1] if fixes else ""


def _dump(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def write_vulndb(root: Path, vulns: Sequence[Vuln], modified: datetime | None = None) -> Path:
    """Write (or rewrite) the whole database under `root`; db.json last, as a mirror does."""
    modified = modified or max((v.modified for v in vulns), default=DEFAULT_MODIFIED)
    by_module: dict[str, list[dict[str, str]]] = {}
    for v in vulns:
        _dump(root / "ID" / f"{v.id}.json", v.osv())
        item = {"id": v.id, "modified": format_time(v.modified)}
        if v.last_fixed():
            item["fixed"] = v.last_fixed()
        by_module.setdefault(v.module, []).append(item)
    modules = [{"path": m, "vulns": items} for m, items in sorted(by_module.items())]
    _dump(root / "index" / "modules.json", modules)
    listing = [
        {"id": v.id, "modified": format_time(v.modified), "aliases": list(v.aliases)} for v in vulns
    ]
    _dump(root / "index" / "vulns.json", listing)
    _dump(root / "index" / "db.json", {"modified": format_time(modified)})
    return root
