"""Go version strings: module semver, pseudo-versions and toolchain versions.

This is a pure-Python port of three pieces of the Go toolchain:

* ``golang.org/x/mod/semver``: semantic versions with the mandatory ``v``
  prefix and the ``vMAJOR`` / ``vMAJOR.MINOR`` shorthands;
* the pseudo-version half of ``golang.org/x/mod/module`` (``pseudo.go``);
* ``go/version`` (``internal/gover``): toolchain versions such as ``go1.21.3``
  or ``go1.22rc1``, used to route on the client's Go version.

Semver numbers are kept as decimal strings, as Go does, so arbitrarily long
numbers (``v1.2.99999999999999999``) behave exactly as in Go.

Strings: Go strings are bytes, Python strings are code points. A Go string
holding invalid UTF-8 is represented here the way ``bytes.decode("utf-8",
"surrogateescape")`` represents it: each bad byte 0xHH becomes the lone
surrogate U+DCHH. `go_bytes` maps such a string back to Go's bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cmp_to_key
from types import MappingProxyType

from router.core.errors import ModuleError

__all__ = [
    "GoVersion",
    "GoVersionClause",
    "GoVersionConstraint",
    "InvalidConstraintError",
    "build",
    "canonical",
    "canonical_version",
    "compare",
    "go_bytes",
    "go_quote",
    "go_quote_rune",
    "is_pseudo_version",
    "is_valid",
    "is_zero_pseudo_version",
    "major",
    "major_minor",
    "max_version",
    "parse_go_version",
    "prerelease",
    "pseudo_version",
    "pseudo_version_base",
    "pseudo_version_rev",
    "pseudo_version_time",
    "sort_versions",
    "zero_pseudo_version",
]

# ---------------------------------------------------------------------------
# Go string helpers (used to build error messages that read like Go's)
# ---------------------------------------------------------------------------

_SHORT_ESCAPES = MappingProxyType(
    {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}
)


def go_bytes(s: str) -> bytes:
    """Return the bytes of the Go string that `s` stands for.

    Lone surrogates U+DC80..U+DCFF (as produced by ``surrogateescape``) become
    the single invalid bytes they encode; any other lone surrogate is written
    as its three-byte (invalid in Go) UTF-8 form.
    """
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(
            bytes([ord(ch) - 0xDC00])
            if 0xDC80 <= ord(ch) <= 0xDCFF
            else ch.encode("utf-8", "surrogatepass")
            for ch in s
        )


def _escape_char(ch: str, quote: str) -> str:
    """Escape one valid code point as Go's strconv quoting does."""
    if ch in (quote, "\\"):
        return "\\" + ch
    if ch.isprintable():
        return ch
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(s: str) -> str:
    """Quote `s` like Go's ``%q`` verb (``strconv.Quote``).

    Bytes that are not valid UTF-8 (see `go_bytes`) are shown as ``\\xHH``.
    """
    parts = ['"']
    for ch in s:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            parts.extend(f"\\x{byte:02x}" for byte in go_bytes(ch))
        else:
            parts.append(_escape_char(ch, '"'))
    parts.append('"')
    return "".join(parts)


def go_quote_rune(ch: str) -> str:
    """Quote one character like Go's ``%q`` verb on a rune (``strconv.QuoteRune``)."""
    if 0xD800 <= ord(ch) <= 0xDFFF:
        ch = "\ufffd"  # Go decodes an invalid byte as utf8.RuneError
    return "'" + _escape_char(ch, "'") + "'"


# ---------------------------------------------------------------------------
# Semantic versions (golang.org/x/mod/semver)
# ---------------------------------------------------------------------------

_NUM = r"(?:0|[1-9][0-9]*)"
_PRERELEASE_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"v(?P<major>{_NUM})"
    rf"(?:\.(?P<minor>{_NUM})"
    rf"(?:\.(?P<patch>{_NUM})"
    rf"(?P<prerelease>-{_PRERELEASE_IDENT}(?:\.{_PRERELEASE_IDENT})*)?"
    r"(?P<build>\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r")?)?",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class _Semver:
    """The parts of a valid semantic version; `short` is what Canonical appends."""

    major: str
    minor: str
    patch: str
    short: str
    prerelease: str
    build: str


def _parse_semver(v: str) -> _Semver | None:
    """Split `v` into its parts, or return None when it is not valid semver."""
    m = _SEMVER_RE.fullmatch(v)
    if m is None:
        return None
    minor, patch = m["minor"], m["patch"]
    if minor is None:
        return _Semver(m["major"], "0", "0", ".0.0", "", "")
    if patch is None:
        return _Semver(m["major"], minor, "0", ".0", "", "")
    return _Semver(m["major"], minor, patch, "", m["prerelease"] or "", m["build"] or "")


def is_valid(v: str) -> bool:
    """Report whether `v` is a valid semantic version (``semver.IsValid``)."""
    return _parse_semver(v) is not None


def canonical(v: str) -> str:
    """Return the canonical form of `v` (``semver.Canonical``), or "" if invalid.

    Missing ``.MINOR``/``.PATCH`` are filled in and build metadata is dropped.
    """
    p = _parse_semver(v)
    if p is None:
        return ""
    if p.build:
        return v[: len(v) - len(p.build)]
    return v + p.short


def major(v: str) -> str:
    """Return the major prefix of `v` (``"v2"`` for ``"v2.1.0"``), or "" if invalid."""
    p = _parse_semver(v)
    return "" if p is None else v[: 1 + len(p.major)]


def major_minor(v: str) -> str:
    """Return the ``vMAJOR.MINOR`` prefix of `v`, or "" if invalid."""
    p = _parse_semver(v)
    if p is None:
        return ""
    i = 1 + len(p.major)
    j = i + 1 + len(p.minor)
    if j <= len(v) and v[i] == "." and v[i + 1 : j] == p.minor:
        return v[:j]
    return v[:i] + "." + p.minor


def prerelease(v: str) -> str:
    """Return the prerelease suffix of `v` (``"-pre"``), or "" if none or invalid."""
    p = _parse_semver(v)
    return "" if p is None else p.prerelease


def build(v: str) -> str:
    """Return the build suffix of `v` (``"+meta"``), or "" if none or invalid."""
    p = _parse_semver(v)
    return "" if p is None else p.build


def _compare_decimal(x: str, y: str) -> int:
    """Compare two decimal strings without leading zeros numerically."""
    if x == y:
        return 0
    if len(x) != len(y):
        return -1 if len(x) < len(y) else 1
    return -1 if x < y else 1


def _is_decimal(s: str) -> bool:
    return all("0" <= ch <= "9" for ch in s)


def _compare_prerelease(x: str, y: str) -> int:
    """Compare prerelease suffixes (with their leading ``-``) by semver precedence."""
    if x == y:
        return 0
    if not x:
        return 1
    if not y:
        return -1
    xs, ys = x[1:].split("."), y[1:].split(".")
    for dx, dy in zip(xs, ys, strict=False):
        if dx == dy:
            continue
        nx, ny = _is_decimal(dx), _is_decimal(dy)
        if nx != ny:
            return -1 if nx else 1
        if nx:
            return _compare_decimal(dx, dy)
        return -1 if dx < dy else 1
    return -1 if len(xs) < len(ys) else 1


def compare(v: str, w: str) -> int:
    """Compare two semantic versions, returning -1, 0 or 1 (``semver.Compare``).

    An invalid version sorts before every valid one; invalid versions compare
    equal to each other. Build metadata is ignored.
    """
    pv, pw = _parse_semver(v), _parse_semver(w)
    if pv is None or pw is None:
        return (pv is not None) - (pw is not None)
    for a, b in ((pv.major, pw.major), (pv.minor, pw.minor), (pv.patch, pw.patch)):
        if c := _compare_decimal(a, b):
            return c
    return _compare_prerelease(pv.prerelease, pw.prerelease)


def max_version(v: str, w: str) -> str:
    """Canonicalise both versions and return the greater (``semver.Max``)."""
    v, w = canonical(v), canonical(w)
    return v if compare(v, w) > 0 else w


def _by_version(v: str, w: str) -> int:
    """``semver.ByVersion`` order: by `compare`, then by Go (byte) string order."""
    if c := compare(v, w):
        return c
    bv, bw = go_bytes(v), go_bytes(w)
    return (bv > bw) - (bv < bw)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Return `versions` sorted as ``semver.Sort`` sorts them (a new list)."""
    return sorted(versions, key=cmp_to_key(_by_version))


def canonical_version(v: str) -> str:
    """``module.CanonicalVersion``: `canonical` but keeping a ``+incompatible`` suffix."""
    cv = canonical(v)
    return cv + "+incompatible" if build(v) == "+incompatible" else cv


# ---------------------------------------------------------------------------
# Pseudo-versions (golang.org/x/mod/module, pseudo.go)
# ---------------------------------------------------------------------------

_PSEUDO_VERSION_RE = re.compile(
    r"v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+"
    r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
_ZERO_REV = "000000000000"


def _pseudo_error(v: str, reason: str) -> ModuleError:
    """Build the error x/mod's InvalidVersionError{Pseudo: true} would print."""
    return ModuleError(f"pseudo-version {go_quote(v)} invalid: {reason}")


def _timestamp(t: datetime) -> str:
    """Format `t` in UTC as ``yyyymmddhhmmss`` (a naive `t` is taken to be UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}"


def _increment_decimal(decimal: str) -> str:
    """Return the decimal string plus one (digit by digit, no size limit)."""
    digits = decimal.rstrip("9")
    nines = len(decimal) - len(digits)
    if not digits:
        return "1" + "0" * nines
    return digits[:-1] + chr(ord(digits[-1]) + 1) + "0" * nines


def _decrement_decimal(decimal: str) -> str:
    """Return the decimal string minus one, or "" when it is all zeros."""
    digits = decimal.rstrip("0")
    zeros = len(decimal) - len(digits)
    if not digits:
        return ""
    if len(digits) == 1 and digits == "1" and len(decimal) > 1:
        return "9" * zeros
    return digits[:-1] + chr(ord(digits[-1]) - 1) + "9" * zeros


def pseudo_version(major: str, older: str, t: datetime, rev: str) -> str:
    """Build a pseudo-version (``module.PseudoVersion``).

    `major` (``"v1"``; "" means ``"v0"``) is used only when `older`, the most
    recent tagged version before the commit, is "" or invalid. `t` is the commit
    time (naive means UTC) and `rev` the revision identifier.
    """
    segment = f"{_timestamp(t)}-{rev}"
    build_suffix = build(older)
    older = canonical(older)
    if not older:
        return (major or "v0") + ".0.0-" + segment
    if prerelease(older):
        return older + ".0." + segment + build_suffix
    i = older.rindex(".") + 1
    return older[:i] + _increment_decimal(older[i:]) + "-0." + segment + build_suffix


def zero_pseudo_version(major: str) -> str:
    """Return the placeholder pseudo-version with zero time and revision."""
    return pseudo_version(major, "", _ZERO_TIME, _ZERO_REV)


def is_pseudo_version(v: str) -> bool:
    """Report whether `v` is a pseudo-version (``module.IsPseudoVersion``)."""
    return v.count("-") >= 2 and is_valid(v) and _PSEUDO_VERSION_RE.fullmatch(v) is not None


def is_zero_pseudo_version(v: str) -> bool:
    """Report whether `v` is the placeholder returned by `zero_pseudo_version`."""
    return v == zero_pseudo_version(major(v))


def _parse_pseudo_version(v: str) -> tuple[str, str, str, str]:
    """Split a pseudo-version into (base, timestamp, rev, build)."""
    if not is_pseudo_version(v):
        raise _pseudo_error(v, "syntax error")
    build_suffix = build(v)
    rest = v[: len(v) - len(build_suffix)]
    rest, rev = rest.rsplit("-", 1)
    dash, dot = rest.rfind("-"), rest.rfind(".")
    if dot > dash:
        return rest[:dot], rest[dot + 1 :], rev, build_suffix  # vX.Y.Z-pre.0 / vX.Y.(Z+1)-0
    return rest[:dash], rest[dash + 1 :], rev, build_suffix  # vX.0.0


def pseudo_version_time(v: str) -> datetime:
    """Return the commit time (UTC) recorded in pseudo-version `v`.

    Raises `ModuleError` when `v` is not a pseudo-version or its timestamp is
    not a real date. (Go also accepts the year 0000, which `datetime` cannot
    represent; such a version is rejected here.)
    """
    _, stamp, _, _ = _parse_pseudo_version(v)
    fields = (stamp[0:4], stamp[4:6], stamp[6:8], stamp[8:10], stamp[10:12], stamp[12:14])
    try:
        year, month, day, hour, minute, second = (int(f) for f in fields)
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _pseudo_error(v, f"malformed time {go_quote(stamp)}") from None


def pseudo_version_rev(v: str) -> str:
    """Return the revision identifier of pseudo-version `v` (raises `ModuleError`)."""
    return _parse_pseudo_version(v)[2]


def pseudo_version_base(v: str) -> str:
    """Return the tagged version pseudo-version `v` is based on, "" if none.

    Raises `ModuleError` when `v` is not a pseudo-version or cannot have a base.
    """
    base, _, _, build_suffix = _parse_pseudo_version(v)
    pre = prerelease(base)
    if pre == "":  # vX.0.0-yyyymmddhhmmss-rev
        if build_suffix:
            reason = f"lacks base version, but has build metadata {go_quote(build_suffix)}"
            raise _pseudo_error(v, reason)
        return ""
    if pre == "-0":  # vX.Y.(Z+1)-0.yyyymmddhhmmss-rev
        base = base[: len(base) - len(pre)]
        i = base.rindex(".")
        patch = _decrement_decimal(base[i + 1 :])
        if not patch:
            raise _pseudo_error(v, f"version before {base} would have negative patch number")
        return base[: i + 1] + patch + build_suffix
    return base.removesuffix(".0") + build_suffix  # vX.Y.Z-pre.0.yyyymmddhhmmss-rev


# ---------------------------------------------------------------------------
# Go toolchain versions (go/version, internal/gover)
# ---------------------------------------------------------------------------

_GO_RELEASE_RE = re.compile(
    rf"(?P<major>{_NUM})(?:\.(?P<minor>{_NUM})"
    rf"(?:\.(?P<patch>{_NUM})|(?P<kind>[a-z]+)(?P<pre>{_NUM})?)?)?",
    re.ASCII,
)


# runtime.Version()'s " X:exp1,exp2" suffix (internal/buildcfg: experiment names are
# lower-case Go identifiers, "no" + name for one switched off)
_EXPERIMENTS_RE = re.compile(r"X:[a-z0-9_]+(?:,[a-z0-9_]+)*", re.ASCII)


def _key_int(n: int | None) -> int:
    """Sort key for an optional number: a missing number sorts before 0, as in Go."""
    return -1 if n is None else n


@dataclass(frozen=True, slots=True)
class GoVersion:
    """A Go toolchain version, ordered like Go's ``go/version.Compare``.

    The fields mirror ``internal/gover.Version``: ``go1.22rc1`` is
    ``GoVersion(1, 22, None, "rc", 1)``. Build instances with
    `parse_go_version`, which applies Go's normalisations: ``go1`` means
    1.0.0, and before Go 1.21 a missing patch means ``.0`` (``go1.20`` equals
    ``go1.20.0``). From 1.21 on, ``go1.21`` is the *language version*, which
    sorts before every 1.21 release::

        go1.21 < go1.21rc1 < go1.21rc2 < go1.21.0 < go1.21.1 < go1.22
        go1.20rc1 < go1.20 == go1.20.0 < go1.20.1

    Prerelease kinds compare as strings (``alpha < beta < rc``).

    A development build (``devel ...``) has ``devel=True`` and sorts after
    every release; its numbers are those of the release it is based on when
    known (``devel go1.23-abcdef``), and ``major=0, minor=None`` when not
    (``devel +abcdef``). Devel builds order among themselves by those numbers.
    """

    major: int
    minor: int | None = None
    patch: int | None = None
    kind: str = ""
    pre: int | None = None
    devel: bool = False

    def _key(self) -> tuple[bool, int, int, int, str, int]:
        return (
            self.devel,
            self.major,
            _key_int(self.minor),
            _key_int(self.patch),
            self.kind,
            _key_int(self.pre),
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, GoVersion):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, GoVersion):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, GoVersion):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, GoVersion):
            return NotImplemented
        return self._key() >= other._key()

    def __str__(self) -> str:
        if self.devel and self.minor is None:
            return "devel"
        text = f"go{self.major}"
        if self.minor is not None:
            text += f".{self.minor}"
        if self.patch is not None:
            text += f".{self.patch}"
        text += self.kind + ("" if self.pre is None else str(self.pre))
        return "devel " + text if self.devel else text


def _optional_int(digits: str | None) -> int | None:
    return None if digits is None else int(digits)


def _parse_go_release(token: str) -> GoVersion | None:
    """Parse ``[go]1.21.3[-suffix]`` as ``go/version`` does (the prefix is optional here)."""
    token = token.partition("-")[0].removeprefix("go")
    m = _GO_RELEASE_RE.fullmatch(token)
    if m is None:
        return None
    try:
        major_ = int(m["major"])
        minor, patch, pre = (_optional_int(m[group]) for group in ("minor", "patch", "pre"))
    except ValueError:  # more digits than Python's int-parsing limit
        return None
    if minor is None:
        minor, patch = 0, 0  # "1" means 1.0.0
    elif patch is None and m["kind"] is None and minor < 21:
        patch = 0  # before 1.21, "1.20" means 1.20.0
    return GoVersion(major_, minor, patch, m["kind"] or "", pre)


def _parse_devel(words: list[str]) -> GoVersion | None:
    """Parse the words of ``devel [go1.23-abcdef | +abcdef] [anything...]``."""
    if len(words) == 1 or (words[1].startswith("+") and len(words[1]) > 1):
        return GoVersion(0, devel=True)
    if not words[1].startswith("go"):
        return None
    base = _parse_go_release(words[1])
    return None if base is None else replace(base, devel=True)


def parse_go_version(text: str) -> GoVersion | None:
    """Parse a Go toolchain version, or return None when it is not one.

    Accepted: ``go1.21.3``, ``go1.21``, ``go1.22rc1``, ``go1.22beta2``, the
    same without the ``go`` prefix (``1.21``, ``1.22.0``), a custom-toolchain
    suffix (``go1.21.3-bigcorp``, ignored as in ``go/version``), and the
    development forms ``devel go1.23-abcdef <date>``, ``devel +abcdef <date>``
    and ``devel``. Surrounding whitespace is ignored. A toolchain built with
    ``GOEXPERIMENT`` reports its experiments after the version, as
    ``runtime.Version()`` and ``go env GOVERSION`` print them
    (``go1.22.0 X:loopvar``, ``go1.23.1 X:boringcrypto,rangefunc``): that
    suffix is ignored; any other word after the version is refused.
    """
    words = text.split()
    if not words:
        return None
    if words[0] == "devel":
        return _parse_devel(words)
    if len(words) == 2 and _EXPERIMENTS_RE.fullmatch(words[1]):
        words = words[:1]  # built with GOEXPERIMENT: the version is the first word
    if len(words) != 1:
        return None
    return _parse_go_release(words[0])


class InvalidConstraintError(ValueError):
    """A Go version constraint (``">=1.22,<1.24"``) that cannot be parsed."""


_OPERATORS = ("<=", ">=", "==", "!=", "<", ">")


@dataclass(frozen=True, slots=True)
class GoVersionClause:
    """One comparison of a constraint, such as ``<1.21``."""

    op: str
    version: GoVersion

    def matches(self, version: GoVersion) -> bool:
        """Report whether `version` satisfies this comparison (Go version order)."""
        match self.op:
            case "<":
                return version < self.version
            case "<=":
                return version <= self.version
            case ">":
                return version > self.version
            case ">=":
                return version >= self.version
            case "==":
                return version == self.version
            case "!=":
                return version != self.version
        raise AssertionError(f"unknown operator {self.op!r}")

    def __str__(self) -> str:
        return f"{self.op}{str(self.version).removeprefix('go')}"


def _parse_clause(constraint: str, clause: str) -> GoVersionClause:
    """Parse one comma-separated clause of `constraint`."""
    clause = clause.strip()
    if not clause:
        raise InvalidConstraintError(f"invalid Go version constraint {constraint!r}: empty clause")
    op = next((o for o in _OPERATORS if clause.startswith(o)), "")
    operand = clause[len(op) :].strip()
    if not operand:
        raise InvalidConstraintError(
            f"invalid Go version constraint {constraint!r}: no version after {op!r}"
        )
    if operand[0] in "<>=!~^":
        raise InvalidConstraintError(
            f"invalid Go version constraint {constraint!r}: unknown operator in {clause!r}"
            f" (use one of <, <=, >, >=, ==, !=)"
        )
    version = _parse_go_release(operand)
    if version is None:
        raise InvalidConstraintError(
            f"invalid Go version constraint {constraint!r}: {operand!r} is not a Go release"
            " version (like 1.21, 1.21.3 or go1.22rc1)"
        )
    return GoVersionClause(op or "==", version)


@dataclass(frozen=True, slots=True)
class GoVersionConstraint:
    """A comma-separated conjunction of comparisons against Go versions.

    Each clause is ``OP VERSION`` with OP one of ``< <= > >= == !=`` (no OP
    means ``==``), e.g. ``"<1.21"``, ``">=1.22,<1.24"``, ``"!=1.20"``.
    Comparisons use Go's own order (see `GoVersion`), and an operand is read
    exactly as Go reads it, so ``1.21`` is the *language version* 1.21:

    * ``<1.21`` matches 1.20.x and older; not 1.21rc1, 1.21.0 or 1.21.3;
    * ``>=1.21`` matches 1.21rc1 and every 1.21.x release;
    * ``==1.21`` matches only a client that reports exactly ``go1.21``; to
      select a whole release line use ``>=1.21,<1.22``;
    * ``!=1.20`` excludes go1.20 (== go1.20.0) but not go1.20.1.

    A development build is newer than every release: it matches ``>=`` and
    ``>`` clauses and ``!=``, never ``<``, ``<=`` or ``==``. Operands must be
    releases, not ``devel``.
    """

    clauses: tuple[GoVersionClause, ...]

    @classmethod
    def parse(cls, text: str) -> GoVersionConstraint:
        """Parse `text`, raising `InvalidConstraintError` with the reason if malformed."""
        if not text.strip():
            raise InvalidConstraintError("invalid Go version constraint: empty constraint")
        return cls(tuple(_parse_clause(text, clause) for clause in text.split(",")))

    def matches(self, version: GoVersion) -> bool:
        """Report whether `version` satisfies every clause."""
        return all(clause.matches(version) for clause in self.clauses)

    def __str__(self) -> str:
        return ",".join(str(clause) for clause in self.clauses)
