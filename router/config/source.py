"""Reading YAML with line numbers, so that every rules error says FILE:LINE.

PyYAML's composer gives nodes with positions; this module turns them into
plain Python values whose mappings and sequences remember the line of every
key, value and item, so a problem with a value is reported where the value
is written. Duplicate keys, which PyYAML would silently overwrite, are
reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.config.yamlerrors import describe


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a rules file: an error, or a warning that does not block."""

    file: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}"


class LocatedDict(dict[str, Any]):
    """A mapping from a YAML file that knows its own line and each key's and value's line.

    A value's line is where a text, number or boolean value starts (usually its
    key's line); for a mapping or list value it is its key's line, whose items
    have lines of their own.
    """

    file: str
    line: int
    key_lines: dict[str, int]
    value_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: str) -> int:
        return self.value_lines.get(key, self.line_of(key))


class LocatedList(list[Any]):
    """A sequence from a YAML file that knows its own line and each item's line."""

    file: str
    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class Unreadable:
    """A scalar PyYAML could not build (`2024-13-01` read as a date): already reported."""

    def __repr__(self) -> str:
        return "<unreadable>"


UNREADABLE = Unreadable()

_KINDS = {
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:binary": "base64",
}


@dataclass(slots=True)
class _Reader:
    file: str
    problems: list[Problem] = field(default_factory=list)

    def convert(self, node: yaml.Node) -> Any:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, line)
        if isinstance(node, yaml.SequenceNode):
            seq = LocatedList(self.convert(item) for item in node.value)
            seq.file, seq.line = self.file, line
            seq.item_lines = [item.start_mark.line + 1 for item in node.value]
            return seq
        return self._scalar(node, line)

    def _scalar(self, node: yaml.Node, line: int) -> Any:
        """A scalar's value; one PyYAML cannot build is a problem, and UNREADABLE."""
        try:
            return yaml.SafeLoader("").construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            message = f"unknown tag {node.tag!r}: quote the value if it is text"
        except (ValueError, TypeError) as exc:
            kind = _KINDS.get(node.tag, "a value")
            message = f"{node.value!r} cannot be read as {kind} ({exc}): quote it if it is text"
        self.problems.append(Problem(self.file, line, message))
        return UNREADABLE

    def _mapping(self, node: yaml.MappingNode, line: int) -> LocatedDict:
        out = LocatedDict()
        out.file, out.line, out.key_lines, out.value_lines = self.file, line, {}, {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Problem(self.file, key_line, "mapping keys must be plain text")
                )
                continue
            key = str(key_node.value)
            if key in out:
                self.problems.append(
                    Problem(
                        self.file,
                        key_line,
                        f"duplicate key {key!r} (first at line {out.key_lines[key]})",
                    )
                )
                continue
            out[key] = self.convert(value_node)
            out.key_lines[key] = key_line
            if isinstance(value_node, yaml.ScalarNode):
                out.value_lines[key] = value_node.start_mark.line + 1
            else:
                out.value_lines[key] = key_line
        return out


def read_yaml(path: Path, display: str | None = None) -> tuple[Any, list[Problem]]:
    """Parse one YAML file; returns (document or None, problems)."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, 1, f"cannot read file: {exc}")]
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[Any, list[Problem]]:
    """Parse YAML text; a syntax error becomes one problem at its line."""
    reader = _Reader(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, message = describe(exc, text)
        return None, [Problem(name, line, message)]
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        return None, [Problem(name, line, f"character {exc.character:#x} is not allowed in YAML")]
    except yaml.YAMLError as exc:
        return None, [Problem(name, 1, "YAML error: " + " ".join(str(exc).split()))]
    if node is None:
        return None, []
    doc = reader.convert(node)
    return (None if doc is UNREADABLE else doc), reader.problems
