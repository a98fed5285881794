"""The names the rules define, read from the files as written.

An upstream with a bad URL, a pool with a bad field or a tenant whose id is
not a valid name is left out of the typed model, but it still defines its
name: references to it are not "unknown", so one mistake is reported once.
When some names cannot be read at all (a file that does not parse, an item
without a name), nothing is called unknown: it might be one of those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.config.source import LocatedDict, LocatedList
from router.config.spec import Checker
from router.core.model import Where


@dataclass(slots=True)
class Names:
    """The names of one kind of object, each with where it was first defined."""

    what: str
    first: dict[str, Where] = field(default_factory=dict)
    complete: bool = True
    written: Where | None = None  # where the list or mapping of them was first written

    def lacks(self, name: str) -> bool:
        """True when `name` is surely not defined (every name could be read)."""
        return self.complete and name not in self.first

    def add(self, name: str, where: Where, ck: Checker) -> None:
        first = self.first.get(name)
        if first is None:
            self.first[name] = where
            return
        near = f"line {first.line}" if first.file == where.file else f"{first.file}:{first.line}"
        ck.error(where.file, where.line, f"duplicate {self.what} {name!r} (first at {near})")


@dataclass(frozen=True, slots=True)
class Declared:
    upstreams: Names
    pools: Names
    tenants: Names
    routes: Names


def declare(docs: Sequence[LocatedDict], complete: bool, ck: Checker) -> Declared:
    """Every name the documents define; reports a name defined twice, at the second one.

    `complete` is False when some file could not be read as a mapping.
    """
    found = Declared(
        upstreams=Names("upstream", complete=complete),
        pools=Names("pool", complete=complete),
        tenants=Names("tenant", complete=complete),
        routes=Names("route", complete=complete),
    )
    for doc in docs:
        _list_names(doc, "upstreams", "name", found.upstreams, ck)
        _list_names(doc, "tenants", "id", found.tenants, ck)
        _list_names(doc, "routes", "name", found.routes, ck)
        _map_names(doc, "pools", found.pools)
    return found


def _written(doc: LocatedDict, key: str, names: Names) -> Any:
    """doc[key] (None when absent), remembering where the first one was written."""
    if key in doc and names.written is None:
        names.written = Where(doc.file, doc.line_of(key))
    return doc.get(key)


def _list_names(doc: LocatedDict, key: str, name_key: str, names: Names, ck: Checker) -> None:
    items = _written(doc, key, names)
    if items is None:
        return
    if not isinstance(items, LocatedList):
        names.complete = False
        return
    for item in items:
        name = item.get(name_key) if isinstance(item, LocatedDict) else None
        if not isinstance(name, str):
            names.complete = False
            continue
        names.add(name, Where(item.file, item.value_line(name_key)), ck)


def _map_names(doc: LocatedDict, key: str, names: Names) -> None:
    """Pools are keys of one mapping: a pool defined twice is reported by the merge."""
    items = _written(doc, key, names)
    if items is None:
        return
    if not isinstance(items, LocatedDict):
        names.complete = False
        return
    for name in items:
        names.first.setdefault(str(name), Where(items.file, items.line_of(name)))
