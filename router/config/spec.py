"""A tiny schema language for the rules: checks types, converts units, emits JSON Schema.

Each spec checks a value read from YAML (with its file and line), reports
problems to a `Checker`, and returns the converted value (durations in
seconds, sizes in bytes). The same specs produce the JSON Schema that
`goproxy-router schema` prints, so the two never drift apart.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from router.config.source import UNREADABLE, LocatedDict, LocatedList, Problem
from router.config.units import parse_duration, parse_rate, parse_size
from router.core.model import LinePath, Where

_MISSING: Any = object()


@dataclass(slots=True)
class Checker:
    """Collects problems while specs check a document."""

    problems: list[Problem] = field(default_factory=list)

    def error(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    def warn(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message, warning=True))


def where_of(value: LocatedDict) -> Where:
    """Where a checked mapping was written, with the line of every key and item in it."""
    lines: dict[LinePath, int] = {}
    _collect_lines(value, (), lines)
    return Where(value.file, value.line, lines)


def _collect_lines(value: Any, path: LinePath, lines: dict[LinePath, int]) -> None:
    if isinstance(value, LocatedDict):
        for key, line in value.value_lines.items():
            lines[(*path, key)] = line
            _collect_lines(value[key], (*path, key), lines)
    elif isinstance(value, LocatedList):
        for index, line in enumerate(value.item_lines):
            lines[(*path, index)] = line
            _collect_lines(value[index], (*path, index), lines)


class Spec:
    """Base of all specs."""

    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _check(spec: Spec, value: Any, where: Where, ck: Checker) -> Any:
    """`spec.check`, except for a value the YAML reader could not build: it was reported."""
    return _MISSING if value is UNREADABLE else spec.check(value, where, ck)


@dataclass(frozen=True, slots=True)
class Str(Spec):
    """Text, optionally restricted by a regex `pattern` or a set of `choices`."""

    pattern: str | None = None
    choices: tuple[str, ...] = ()
    hint: str = ""
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if not isinstance(value, str):
            ck.error(where.file, where.line, f"expected text, got {_type_name(value)}")
            return _MISSING
        if self.choices and value not in self.choices:
            ck.error(
                where.file,
                where.line,
                f"{value!r} is not one of {', '.join(self.choices)}",
            )
            return _MISSING
        if self.pattern and not re.fullmatch(self.pattern, value):
            ck.error(where.file, where.line, f"{value!r} is not valid{self.hint}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.choices:
            out["enum"] = list(self.choices)
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class Bool(Spec):
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if not isinstance(value, bool):
            ck.error(where.file, where.line, f"expected true or false, got {_type_name(value)}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        return (
            {"type": "boolean", "description": self.description}
            if self.description
            else {"type": "boolean"}
        )


@dataclass(frozen=True, slots=True)
class Number(Spec):
    """A number within [minimum, maximum]; `integer` refuses fractions."""

    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    exclusive_minimum: bool = False
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        ok_type = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            kind = "a whole number" if self.integer else "a number"
            got = value if isinstance(value, float) else _type_name(value)
            ck.error(where.file, where.line, f"expected {kind}, got {got}")
            return _MISSING
        low = self.minimum
        if low is not None and (value < low or (self.exclusive_minimum and value == low)):
            op = ">" if self.exclusive_minimum else ">="
            ck.error(where.file, where.line, f"{value} must be {op} {low:g}")
            return _MISSING
        if self.maximum is not None and value > self.maximum:
            ck.error(where.file, where.line, f"{value} must be <= {self.maximum:g}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        if self.minimum is not None:
            key = "exclusiveMinimum" if self.exclusive_minimum else "minimum"
            out[key] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class Version(Spec):
    """The rules version a file is written for: only `supported` is read."""

    supported: int
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value == self.supported:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            message = f"expected a rules version like {self.supported}, got {_type_name(value)}"
        else:
            message = (
                f"rules version {value} is not supported "
                f"(this gateway reads version {self.supported})"
            )
        ck.error(where.file, where.line, message)
        return _MISSING

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.supported, "maximum": self.supported}


@dataclass(frozen=True, slots=True)
class Converted(Spec):
    """Text (or a number) converted by a parse function that raises ValueError."""

    parse: Callable[[Any], Any]
    json_pattern: str
    example: str
    allow_numbers: bool = False
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if isinstance(value, bool) or not (
            isinstance(value, str) or (self.allow_numbers and isinstance(value, int | float))
        ):
            ck.error(
                where.file,
                where.line,
                f"expected text like {self.example}, got {_type_name(value)}",
            )
            return _MISSING
        try:
            return self.parse(value)
        except ValueError as exc:
            ck.error(where.file, where.line, str(exc))
            return _MISSING

    def json_schema(self) -> dict[str, Any]:
        text: dict[str, Any] = {"type": "string", "pattern": self.json_pattern}
        out: dict[str, Any] = (
            {"anyOf": [text, {"type": "number", "minimum": 0}]} if self.allow_numbers else text
        )
        out["description"] = self.description or f"for example {self.example}"
        return out


def _parse_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"URL must not have a query or fragment: {value!r}")
    if parts.username or parts.password:
        raise ValueError(
            "credentials must not be written in an upstream URL; use auth: with *_env or *_file"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"bad port in URL {value!r}") from None
    return value.rstrip("/")


def _parse_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"not an IP network: {value!r} (use e.g. 10.0.0.0/8)") from None


def _parse_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"regex {value!r} does not compile: {exc}") from None
    return value


def _parse_token_hash(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise ValueError(
            "a token must be stored as sha256:<64 lower-case hex digits>; "
            "run `goproxy-router hash-token` to make one"
        )
    return value


def _parse_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return value


def _parse_redis_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in (
        "redis",
        "rediss",
        "unix",
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    ):
        raise ValueError(f"not a redis URL: {value!r} (redis://HOST:PORT/DB, rediss://, unix://)")
    return value


DURATION = Converted(parse_duration, r"^\d+(\.\d+)?(ms|s|m|h|d)$", "10s", allow_numbers=True)
SIZE = Converted(parse_size, r"^\d+(\.\d+)?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$", "256MiB", True)
RATE = Converted(parse_rate, r"^\d+(\.\d+)?/(s|m|h)$", "100/s")
URL = Converted(_parse_url, r"^https?://", "https://proxy.golang.org")
CIDR = Converted(_parse_cidr, r"^[0-9a-fA-F:.]+(/\d+)?$", "10.0.0.0/8")
REGEX = Converted(_parse_regex, r".*", "^Go-http-client/")
TOKEN_HASH = Converted(_parse_token_hash, r"^sha256:[0-9a-f]{64}$", "sha256:<hex>")
LISTEN = Converted(_parse_listen, r"^.+:\d+$", "0.0.0.0:8080")
REDIS_URL = Converted(_parse_redis_url, r"^(redis|rediss|unix)", "redis://127.0.0.1:6379/0")
NAME = Str(pattern=r"[a-z0-9][a-z0-9-]*", hint=" (use lower-case letters, digits and -)")


@dataclass(frozen=True, slots=True)
class Ref(Spec):
    """The name of an object defined elsewhere in the rules (an upstream, pool or tenant).

    Only its type is checked here; whether it names something is looked up
    afterwards (semantic.py). So a reference to an object whose own name is
    invalid is not reported a second time, and a misspelt one reads "unknown".
    The JSON Schema still shows the name pattern: a valid reference matches it.
    """

    name: Str = NAME
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if not isinstance(value, str):
            ck.error(where.file, where.line, f"expected a name, got {_type_name(value)}")
            return _MISSING
        return value

    def json_schema(self) -> dict[str, Any]:
        return self.name.json_schema()


REF = Ref()


@dataclass(frozen=True, slots=True)
class ListOf(Spec):
    """A list of items; with `one_or_many`, a single item is accepted as a list of one."""

    item: Spec
    one_or_many: bool = False
    min_items: int = 0
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if self.one_or_many and not isinstance(value, list):
            value = [value]
            lines = [where.line]
        elif isinstance(value, LocatedList):
            lines = value.item_lines
        elif isinstance(value, list):
            lines = [where.line] * len(value)
        else:
            ck.error(where.file, where.line, f"expected a list, got {_type_name(value)}")
            return _MISSING
        if len(value) < self.min_items:
            ck.error(where.file, where.line, f"needs at least {self.min_items} item(s)")
        out = LocatedList()
        out.file, out.line, out.item_lines = where.file, where.line, []
        for item, line in zip(value, lines, strict=True):
            checked = _check(self.item, item, Where(where.file, line), ck)
            if checked is not _MISSING:
                out.append(checked)
                out.item_lines.append(line)
        return out

    def json_schema(self) -> dict[str, Any]:
        arr: dict[str, Any] = {"type": "array", "items": self.item.json_schema()}
        if self.min_items:
            arr["minItems"] = self.min_items
        out: dict[str, Any] = {"anyOf": [self.item.json_schema(), arr]} if self.one_or_many else arr
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class MapOf(Spec):
    """A mapping from names (matching `key`) to values of one spec."""

    value: Spec
    key: Str = NAME
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if not isinstance(value, dict):
            ck.error(where.file, where.line, f"expected a mapping, got {_type_name(value)}")
            return _MISSING
        out = _new_located(where)
        for key, item in value.items():
            line, value_line = _lines(value, key, where)
            if self.key.check(key, Where(where.file, line), ck) is _MISSING:
                continue
            checked = _check(self.value, item, Where(where.file, value_line), ck)
            if checked is not _MISSING:
                _put(out, key, checked, line, value_line)
        return out

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "additionalProperties": self.value.json_schema(),
        }
        if self.key.pattern:
            out["propertyNames"] = {"pattern": f"^(?:{self.key.pattern})$"}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class Field:
    spec: Spec
    required: bool = False
    default: Any = _MISSING
    description: str = ""
    missing: str = ""  # the message when a required key is absent, if not the usual one


def _new_located(where: Where) -> LocatedDict:
    out = LocatedDict()
    out.file, out.line, out.key_lines, out.value_lines = where.file, where.line, {}, {}
    return out


def _lines(value: Any, key: str, where: Where) -> tuple[int, int]:
    """The lines of `key` and of its value in `value`, as read from the file."""
    if isinstance(value, LocatedDict):
        return value.line_of(key), value.value_line(key)
    return where.line, where.line


def _put(out: LocatedDict, key: str, checked: Any, line: int, value_line: int) -> None:
    out[key] = checked
    out.key_lines[key] = line
    out.value_lines[key] = value_line


@dataclass(frozen=True, slots=True)
class Obj(Spec):
    """A mapping with known keys; unknown keys are errors with a suggestion.

    `whole` checks keys against each other (a cert needs a key, weights sum
    to 1). It runs only when every key read cleanly: a refused value has been
    replaced by its default, and judging the default would report the same
    mistake twice.
    """

    fields: Mapping[str, Field]
    description: str = ""
    whole: Callable[[LocatedDict, Checker], None] | None = None

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        out, complete = self.read(value, where, ck)
        return out if out is not None and complete else _MISSING

    def read(self, value: Any, where: Where, ck: Checker) -> tuple[LocatedDict | None, bool]:
        """The keys that read cleanly (None if `value` is no mapping), and whether every
        required key did."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            ck.error(where.file, where.line, f"expected a mapping, got {_type_name(value)}")
            return None, False
        before = len(ck.problems)
        out = _new_located(where)
        present = self._read_keys(value, where, ck, out)
        complete = self._fill_defaults(out, present, ck)
        if complete and self.whole is not None and len(ck.problems) == before:
            self.whole(out, ck)
        return out, complete

    def _read_keys(
        self, value: dict[str, Any], where: Where, ck: Checker, out: LocatedDict
    ) -> set[str]:
        present: set[str] = set()
        for key, item in value.items():
            line, value_line = _lines(value, key, where)
            spec = self.fields.get(key)
            if spec is None:
                ck.error(where.file, line, f"unknown key {key!r}{_suggest(key, self.fields)}")
                continue
            present.add(key)
            checked = _check(spec.spec, item, Where(where.file, value_line), ck)
            if checked is not _MISSING:
                _put(out, key, checked, line, value_line)
        return present

    def _fill_defaults(self, out: LocatedDict, present: set[str], ck: Checker) -> bool:
        """Defaults for the keys not read; False when a required one is missing or refused."""
        complete = True
        for key, spec in self.fields.items():
            if key in out:
                continue
            if spec.required:
                complete = False
                if key not in present:
                    ck.error(out.file, out.line, spec.missing or f"missing required key {key!r}")
            elif spec.default is None and isinstance(spec.spec, Obj):
                out[key] = spec.spec.check(None, Where(out.file, out.line), ck)
            elif spec.default is not _MISSING:
                out[key] = spec.default
        return complete

    def json_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for key, spec in self.fields.items():
            sub = spec.spec.json_schema()
            if spec.description:
                sub = {**sub, "description": spec.description}
            props[key] = sub
        out: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "additionalProperties": False,
        }
        required = [key for key, spec in self.fields.items() if spec.required]
        if required:
            out["required"] = required
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class AnyOf(Spec):
    """The first alternative whose top-level type fits the value is used."""

    alternatives: tuple[tuple[type | tuple[type, ...], Spec], ...]
    expected: str
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        for types, spec in self.alternatives:
            if isinstance(value, types) and not isinstance(value, bool):
                return spec.check(value, where, ck)
        ck.error(where.file, where.line, f"expected {self.expected}, got {_type_name(value)}")
        return _MISSING

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"anyOf": [spec.json_schema() for _, spec in self.alternatives]}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True, slots=True)
class OffOr(Spec):
    """`off` (which YAML reads as false unless quoted; both are taken) or a mapping
    checked by `spec`. Returns "off" or the checked mapping."""

    spec: Spec
    expected: str
    description: str = ""

    def check(self, value: Any, where: Where, ck: Checker) -> Any:
        if value is False or value == "off":
            return "off"
        if isinstance(value, dict):
            return self.spec.check(value, where, ck)
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        ck.error(where.file, where.line, f"expected off or {self.expected}, got {shown}")
        return _MISSING

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "anyOf": [{"const": "off"}, {"const": False}, self.spec.json_schema()]
        }
        if self.description:
            out["description"] = self.description
        return out


def _suggest(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


MISSING = _MISSING
