"""Module paths: validation, case-escaping and GOPRIVATE-style matching.

A pure-Python port of the path half of ``golang.org/x/mod/module``
(``module.go``) plus Go's ``path.Match``, giving the same verdict as the go
command on every input. Errors are `ModuleError` (HTTP 404) with messages
worded like Go's, e.g.
``malformed module path "x": missing dot in first path element``.

Three kinds of path are checked, from strictest to most lenient:

* module paths (`check_path`): ASCII letters, digits and ``- . _ ~``; a first
  element that looks like a lower-case domain name; ``/vN`` major suffixes
  (``.vN`` for ``gopkg.in``);
* import paths (`check_import_path`): also ``+``, and elements may start with
  a dot;
* file paths (`check_file_path`): also any Unicode letter, space and
  ``! # $ % & ( ) + , = @ [ ] ^ { }``.

Go strings are bytes. A path holding invalid UTF-8 is represented as Python
represents undecodable bytes with ``surrogateescape`` (byte 0xHH becomes the
lone surrogate U+DCHH); every lone surrogate is treated as invalid UTF-8.
"""

from __future__ import annotations

import enum

from router.core.errors import ModuleError
from router.core.versions import build, go_bytes, go_quote, go_quote_rune, is_valid, major

__all__ = [
    "BadPatternError",
    "check",
    "check_file_path",
    "check_import_path",
    "check_path",
    "check_path_major",
    "escape_path",
    "escape_version",
    "match_path_major",
    "match_prefix_patterns",
    "path_match",
    "split_path_version",
    "unescape_path",
    "unescape_version",
]


class _Kind(enum.Enum):
    """Which rules a path is checked against."""

    MODULE = "module"
    IMPORT = "import"
    FILE = "file"


_MODULE_PUNCTUATION = frozenset("-._~")
_FILE_PUNCTUATION = frozenset("!#$%&()+,-.=@[]^_{}~ ")
_FIRST_ELEMENT_CHARS = frozenset("-.0123456789abcdefghijklmnopqrstuvwxyz")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _char_ok(ch: str, kind: _Kind) -> bool:
    """Report whether `ch` may appear in a path element of the given kind."""
    if kind is _Kind.FILE:
        if ch.isascii():
            return _is_ascii_alnum(ch) or ch in _FILE_PUNCTUATION
        return ch.isalpha()  # Unicode letters (categories L*), as unicode.IsLetter
    if kind is _Kind.IMPORT and ch == "+":
        return True
    return _is_ascii_alnum(ch) or ch in _MODULE_PUNCTUATION


def _is_valid_utf8(s: str) -> bool:
    """Report whether `s` stands for valid UTF-8 (holds no lone surrogate)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _windows_problem(short: str, kind: _Kind) -> str | None:
    """Check the part of an element before its first dot against Windows rules."""
    # No non-ASCII rune case-folds to a letter of a reserved name, so an ASCII
    # upper-case comparison is exactly Go's strings.EqualFold here.
    if short.isascii() and short.upper() in _WINDOWS_RESERVED:
        return f"{go_quote(short)} disallowed as path element component on Windows"
    if kind is _Kind.FILE:
        return None  # short names (FOO~1) only matter for import paths
    tilde = short.rfind("~")
    if 0 <= tilde < len(short) - 1 and all("0" <= c <= "9" for c in short[tilde + 1 :]):
        return "trailing tilde and digits in path element"
    return None


def _check_elem(elem: str, kind: _Kind) -> str | None:
    """Return why one path element is invalid, or None if it is valid."""
    if elem == "":
        return "empty path element"
    if elem.count(".") == len(elem):
        return f"invalid path element {go_quote(elem)}"
    if elem[0] == "." and kind is _Kind.MODULE:
        return "leading dot in path element"
    if elem[-1] == ".":
        return "trailing dot in path element"
    for ch in elem:
        if not _char_ok(ch, kind):
            return f"invalid char {go_quote_rune(ch)}"
    return _windows_problem(elem.partition(".")[0], kind)


def _check_path(path: str, kind: _Kind) -> str | None:
    """Return why `path` is invalid for its kind (without naming it), or None."""
    if not _is_valid_utf8(path):
        return "invalid UTF-8"
    if path == "":
        return "empty string"
    if path[0] == "-" and kind is not _Kind.FILE:
        return "leading dash"
    if "//" in path:
        return "double slash"
    if path[-1] == "/":
        return "trailing slash"
    for elem in path.split("/"):
        if (problem := _check_elem(elem, kind)) is not None:
            return problem
    return None


def _malformed(kind: _Kind, path: str, problem: str) -> ModuleError:
    return ModuleError(f"malformed {kind.value} path {go_quote(path)}: {problem}")


def _module_path_problem(path: str) -> str | None:
    """Return why `path` is not a valid module path, or None."""
    if (problem := _check_path(path, _Kind.MODULE)) is not None:
        return problem
    first = path.partition("/")[0]
    if first == "":
        return "leading slash"
    if "." not in first:
        return "missing dot in first path element"
    if path[0] == "-":
        return "leading dash in first path element"
    for ch in first:
        if ch not in _FIRST_ELEMENT_CHARS:
            return f"invalid char {go_quote_rune(ch)} in first path element"
    if not split_path_version(path)[2]:
        return "invalid version"
    return None


def check_path(path: str) -> None:
    """Check that `path` is a valid module path (``module.CheckPath``).

    Raises `ModuleError` saying why it is not.
    """
    if (problem := _module_path_problem(path)) is not None:
        raise _malformed(_Kind.MODULE, path, problem)


def check_import_path(path: str) -> None:
    """Check that `path` is a valid package import path (``module.CheckImportPath``)."""
    if (problem := _check_path(path, _Kind.IMPORT)) is not None:
        raise _malformed(_Kind.IMPORT, path, problem)


def check_file_path(path: str) -> None:
    """Check that `path` is a valid slash-separated file path (``module.CheckFilePath``)."""
    if (problem := _check_path(path, _Kind.FILE)) is not None:
        raise _malformed(_Kind.FILE, path, problem)


def _split_gopkg_in(path: str) -> tuple[str, str, bool]:
    """`split_path_version` for ``gopkg.in/`` paths, which end in ``.vN``."""
    i = len(path)
    if path.endswith("-unstable"):
        i -= len("-unstable")
    while i > 0 and "0" <= path[i - 1] <= "9":
        i -= 1
    if i <= 1 or path[i - 1] != "v" or path[i - 2] != ".":
        return path, "", False  # every gopkg.in path must end in .vN
    prefix, path_major = path[: i - 2], path[i - 2 :]
    if len(path_major) <= 2 or (path_major[2] == "0" and path_major != ".v0"):
        return path, "", False
    return prefix, path_major, True


def split_path_version(path: str) -> tuple[str, str, bool]:
    """Split `path` into (prefix, path_major, ok) with ``prefix + path_major == path``.

    `path_major` is "" or ``/vN`` with N >= 2 (``.vN`` for any N on
    ``gopkg.in``). `ok` is False when the final element looks like a major
    version suffix that `check_path` rejects (``/v1``, ``/v0``, ``/v2.0``).
    """
    if path.startswith("gopkg.in/"):
        return _split_gopkg_in(path)
    i = len(path)
    dot = False
    while i > 0 and ("0" <= path[i - 1] <= "9" or path[i - 1] == "."):
        dot = dot or path[i - 1] == "."
        i -= 1
    if i <= 1 or i == len(path) or path[i - 1] != "v" or path[i - 2] != "/":
        return path, "", True
    prefix, path_major = path[: i - 2], path[i - 2 :]
    if dot or len(path_major) <= 2 or path_major[2] == "0" or path_major == "/v1":
        return path, "", False
    return prefix, path_major, True


def _path_major_problem(v: str, path_major: str) -> str | None:
    """Return why version `v` does not suit `path_major`, or None if it does."""
    if path_major.startswith(".v") and path_major.endswith("-unstable"):
        path_major = path_major.removesuffix("-unstable")
    if v.startswith("v0.0.0-") and path_major == ".v1":
        return None  # old pseudo-versions of gopkg.in .v1 modules used v0.0.0-
    m = major(v)
    if path_major == "":
        if m in ("v0", "v1") or build(v) == "+incompatible":
            return None
        path_major = "v0 or v1"
    elif path_major[0] in "/.":
        if m == path_major[1:]:
            return None
        path_major = path_major[1:]
    return f"should be {path_major}, not {m}"


def match_path_major(v: str, path_major: str) -> bool:
    """Report whether version `v` matches the path's major suffix (``module.MatchPathMajor``)."""
    return _path_major_problem(v, path_major) is None


def check_path_major(v: str, path_major: str) -> None:
    """Raise `ModuleError` unless version `v` matches `path_major` (``module.CheckPathMajor``)."""
    if (problem := _path_major_problem(v, path_major)) is not None:
        raise ModuleError(f"version {go_quote(v)} invalid: {problem}")


def check(path: str, version: str) -> None:
    """Check that `path` is a valid module path and `version` a semver that suits it.

    This is ``module.Check``: ``yaml/v2`` only goes with ``v2.x.y`` versions.
    Raises `ModuleError`.
    """
    check_path(path)
    if not is_valid(version):
        shown = go_bytes(version).decode("utf-8", "replace")  # as Go's bytes would print
        raise ModuleError(f"{path}@{shown}: invalid version: not a semantic version")
    path_major = split_path_version(path)[1]
    if (problem := _path_major_problem(version, path_major)) is not None:
        raise ModuleError(f"{path}@{version}: invalid version: {problem}")


# ---------------------------------------------------------------------------
# Case escaping (the proxy protocol's "!x" for upper-case "X")
# ---------------------------------------------------------------------------


def _escape_string(s: str) -> str:
    """Replace each upper-case ASCII letter with ``!`` and its lower case."""
    if any(ch == "!" or not ch.isascii() for ch in s):
        raise ModuleError("internal error: inconsistency in EscapePath")
    return "".join("!" + ch.lower() if "A" <= ch <= "Z" else ch for ch in s)


def _unescape_string(escaped: str) -> str | None:
    """Undo `_escape_string`, or return None if `escaped` is not a valid escaping."""
    out: list[str] = []
    bang = False
    for ch in escaped:
        if not ch.isascii():
            return None
        if bang:
            if not "a" <= ch <= "z":
                return None
            out.append(ch.upper())
            bang = False
        elif ch == "!":
            bang = True
        elif "A" <= ch <= "Z":
            return None
        else:
            out.append(ch)
    return None if bang else "".join(out)


def escape_path(path: str) -> str:
    """Return the case-escaped form of module path `path` (``module.EscapePath``).

    Raises `ModuleError` if `path` is not a valid module path.
    """
    check_path(path)
    return _escape_string(path)


def escape_version(v: str) -> str:
    """Return the case-escaped form of version `v` (``module.EscapeVersion``).

    Versions need not be semver but must be valid file names without ``!``.
    """
    if "!" in v or _check_elem(v, _Kind.FILE) is not None:
        raise ModuleError(f"version {go_quote(v)} invalid: disallowed version string")
    return _escape_string(v)


def unescape_path(escaped: str) -> str:
    """Return the module path that `escaped` encodes (``module.UnescapePath``).

    Raises `ModuleError` if the escaping or the resulting path is invalid.
    """
    path = _unescape_string(escaped)
    if path is None:
        raise ModuleError(f"invalid escaped module path {go_quote(escaped)}")
    if (problem := _module_path_problem(path)) is not None:
        detail = _malformed(_Kind.MODULE, path, problem)
        raise ModuleError(f"invalid escaped module path {go_quote(escaped)}: {detail}")
    return path


def unescape_version(escaped: str) -> str:
    """Return the version that `escaped` encodes (``module.UnescapeVersion``)."""
    v = _unescape_string(escaped)
    if v is None:
        raise ModuleError(f"invalid escaped version {go_quote(escaped)}")
    if (problem := _check_elem(v, _Kind.FILE)) is not None:
        raise ModuleError(f"invalid escaped version {go_quote(v)}: {problem}")
    return v


# ---------------------------------------------------------------------------
# Glob matching (Go's path.Match) and GOPRIVATE-style prefix patterns
# ---------------------------------------------------------------------------

_RUNE_ERROR = 0xFFFD
_SLASH, _STAR, _QUESTION, _BACKSLASH = ord("/"), ord("*"), ord("?"), ord("\\")
_LBRACKET, _RBRACKET, _DASH = ord("["), ord("]"), ord("-")


class BadPatternError(ValueError):
    """A malformed `path_match` pattern (Go's ``path.ErrBadPattern``)."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


def _decode_rune(b: bytes) -> tuple[int, int]:
    """Decode the first rune of `b` like ``utf8.DecodeRune``: (rune, width).

    An empty or invalid start decodes as (U+FFFD, 0 or 1).
    """
    if not b:
        return _RUNE_ERROR, 0
    lead = b[0]
    if lead < 0x80:
        return lead, 1
    if not 0xC2 <= lead <= 0xF4:
        return _RUNE_ERROR, 1  # a continuation byte, or a lead byte UTF-8 never uses
    width = 2 if lead <= 0xDF else 3 if lead <= 0xEF else 4
    try:  # the strict decoder refuses overlong forms, surrogates and > U+10FFFF, as Go does
        return ord(b[:width].decode("utf-8")), width
    except UnicodeDecodeError:
        return _RUNE_ERROR, 1


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    """Split off (star, chunk, rest): leading stars, then text up to the next star."""
    stripped = pattern.lstrip(b"*")
    star = len(stripped) != len(pattern)
    in_range = False
    i = 0
    while i < len(stripped):
        c = stripped[i]
        if c == _BACKSLASH:
            i += 1 if i + 1 < len(stripped) else 0  # skip the escaped byte
        elif c == _LBRACKET:
            in_range = True
        elif c == _RBRACKET:
            in_range = False
        elif c == _STAR and not in_range:
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _get_escaped(chunk: bytes) -> tuple[int, bytes]:
    """Read one possibly-escaped character of a class: (rune, rest of chunk)."""
    if not chunk or chunk[0] in (_DASH, _RBRACKET):
        raise BadPatternError
    if chunk[0] == _BACKSLASH:
        chunk = chunk[1:]
        if not chunk:
            raise BadPatternError
    rune, width = _decode_rune(chunk)
    if (rune == _RUNE_ERROR and width == 1) or len(chunk) == width:
        raise BadPatternError
    return rune, chunk[width:]


def _match_class(chunk: bytes, rune: int) -> tuple[bool, bytes]:
    """Match `rune` against the class whose text follows the ``[`` in `chunk`."""
    negated = chunk[:1] == b"^"
    if negated:
        chunk = chunk[1:]
    matched = False
    ranges = 0
    while not (chunk[:1] == b"]" and ranges > 0):
        lo, chunk = _get_escaped(chunk)
        hi = lo
        if chunk[0] == _DASH:
            hi, chunk = _get_escaped(chunk[1:])
        matched = matched or lo <= rune <= hi
        ranges += 1
    return matched != negated, chunk[1:]


def _match_chunk(chunk: bytes, s: bytes) -> bytes | None:
    """Match a star-free chunk at the start of `s`; return the rest of `s` or None.

    The whole chunk is always read, so a malformed one raises `BadPatternError`
    even after the match has failed.
    """
    failed = False
    while chunk:
        failed = failed or not s
        c = chunk[0]
        if c == _LBRACKET:
            rune, width = (0, 0) if failed else _decode_rune(s)
            s = s[width:]
            ok, chunk = _match_class(chunk[1:], rune)
            failed = failed or not ok
        elif c == _QUESTION:
            if not failed:
                failed = s[0] == _SLASH
                s = s[_decode_rune(s)[1] :]
            chunk = chunk[1:]
        else:
            if c == _BACKSLASH:
                chunk = chunk[1:]
                if not chunk:
                    raise BadPatternError
            if not failed:
                failed = chunk[0] != s[0]
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def _match_after_star(chunk: bytes, name: bytes, last: bool) -> bytes | None:
    """Try `chunk` after skipping 1, 2, ... bytes of `name` (never a ``/``)."""
    for i in range(len(name)):
        if name[i] == _SLASH:
            break
        rest = _match_chunk(chunk, name[i + 1 :])
        if rest is not None and not (last and rest):
            return rest
    return None


def _path_match(pattern: bytes, name: bytes) -> bool:
    """``path.Match`` on Go byte strings."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return _SLASH not in name  # a trailing * matches the rest of one element
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star and (rest := _match_after_star(chunk, name, not pattern)) is not None:
            name = rest
            continue
        while pattern:  # report a malformed remainder rather than a plain mismatch
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, b"")
        return False
    return not name


def path_match(pattern: str, name: str) -> bool:
    """Report whether `name` matches the shell pattern (Go's ``path.Match``).

    ``*`` matches any run of non-``/`` characters, ``?`` one non-``/``
    character, ``[...]``/``[^...]`` a character class with ``lo-hi`` ranges, and
    ``\\c`` the character c. The whole of `name` must match. Raises
    `BadPatternError` for a malformed pattern (Go may report a mismatch instead
    when the malformed part is never reached, and so does this port).
    """
    return _path_match(go_bytes(pattern), go_bytes(name))


def _glob_matches_prefix(glob: str, target: str) -> bool:
    """Match `glob` against as many leading elements of `target` as it has."""
    slashes = glob.count("/")
    elements = target.split("/")
    if len(elements) <= slashes:
        return False  # the target has too few elements
    try:
        return path_match(glob, "/".join(elements[: slashes + 1]))
    except BadPatternError:
        return False


def match_prefix_patterns(globs: str, target: str) -> bool:
    """Report whether a path prefix of `target` matches one of the comma-separated `globs`.

    This is ``module.MatchPrefixPatterns``, the GOPRIVATE / GONOPROXY /
    GONOSUMDB rule: each glob (``path.Match`` syntax, trailing slashes
    ignored) is matched against the first as-many-elements of `target` as the
    glob has. Empty and malformed globs never match.
    """
    for raw in globs.split(","):
        glob = raw.removesuffix("/")
        if glob and _glob_matches_prefix(glob, target):
            return True
    return False
