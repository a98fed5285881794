"""Go's ``h1:`` hash of a module (``golang.org/x/mod/sumdb/dirhash``), pure.

``hash1`` is ``dirhash.Hash1``: the SHA-256 of a summary holding one line per file,
``"<hex sha256 of content>  <name>\\n"``, in byte order of the names, base64-encoded
after ``h1:``. A module zip's go.sum hash is ``hash_zip_file`` (``dirhash.HashZip``: every
entry of the zip as stored, directory entries included as empty files) and its
``/go.mod`` hash is ``hash_go_mod`` (one file literally named ``go.mod``).

Nothing here touches the file system: ``hash_zip_file`` reads an already-open, seekable
binary file object, one entry at a time, in chunks, so a 500 MiB zip is never in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zipfile
import zlib
from collections.abc import Callable, Iterable
from typing import IO

__all__ = [
    "DirHashError",
    "FileSource",
    "decode_h1",
    "hash1",
    "hash_go_mod",
    "hash_zip_file",
]

_CHUNK = 1 << 16
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_GO_METHODS = frozenset((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))

FileSource = bytes | Callable[[], IO[bytes]]
"""A file's content: the bytes themselves, or a function opening a binary stream of them."""


class DirHashError(ValueError):
    """A file list or zip that Go's dirhash refuses to hash (the message says why)."""


def _go_name(name: str) -> bytes:
    """The bytes Go would see for ``name`` (surrogate escapes stand for raw bytes)."""
    return name.encode("utf-8", "surrogateescape")


def _sha256_stream(stream: IO[bytes]) -> str:
    """Hex SHA-256 of everything left in ``stream``, read in chunks."""
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _summary_hash(names: list[bytes], digest_of: Callable[[bytes], str]) -> str:
    """``Hash1`` over raw ``names``: sort, refuse newlines, hash one summary line each."""
    ordered = sorted(names)
    if any(b"\n" in name for name in ordered):
        raise DirHashError("dirhash: filenames with newlines are not supported")
    summary = hashlib.sha256()
    for name in ordered:
        summary.update(digest_of(name).encode("ascii") + b"  " + name + b"\n")
    return "h1:" + base64.b64encode(summary.digest()).decode("ascii")


def _source_digest(source: FileSource) -> str:
    """Hex SHA-256 of one :data:`FileSource`."""
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    with source() as stream:
        return _sha256_stream(stream)


def hash1(files: Iterable[tuple[str, FileSource]]) -> str:
    """``dirhash.Hash1`` over ``(name, content)`` pairs, names used exactly as given.

    Content is bytes or a zero-argument callable returning a binary stream (opened lazily,
    in sorted order, and closed after reading). As in Go, where contents come from
    ``open(name)``, a name listed twice contributes two summary lines with the content of
    its last pair. A name containing a newline raises :class:`DirHashError`.
    """
    names: list[bytes] = []
    sources: dict[bytes, FileSource] = {}
    for name, source in files:
        raw = _go_name(name)
        names.append(raw)
        sources[raw] = source
    return _summary_hash(names, lambda raw: _source_digest(sources[raw]))


def hash_go_mod(data: bytes) -> str:
    """The go.sum ``/go.mod`` hash: ``Hash1`` of one file named ``go.mod`` holding ``data``."""
    return hash1([("go.mod", data)])


def _raw_zip_name(info: zipfile.ZipInfo) -> bytes:
    """The entry name's bytes as stored (Python decoded them as UTF-8 or CP437)."""
    if info.flag_bits & _UTF8_FLAG:
        return _go_name(info.orig_filename)
    return info.orig_filename.encode("cp437")


def _check_prefix(names: Iterable[bytes], prefix: str) -> None:
    """The go command's check that every entry lies under ``module@version/``."""
    want = _go_name(prefix)
    for name in names:
        if not name.startswith(want):
            shown = name.decode("utf-8", "replace")
            raise DirHashError(f"zip for {prefix.rstrip('/')} has unexpected file {shown}")


def _entry_digest(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """Hex SHA-256 of one entry's content, refusing what Go's archive/zip cannot open."""
    if info.filename.endswith("/"):
        # archive/zip: a directory reads as empty, or fails if it claims content.
        if info.file_size != 0:
            raise DirHashError("zip: not a valid zip file")
        return hashlib.sha256(b"").hexdigest()
    if info.compress_type not in _GO_METHODS or info.flag_bits & _ENCRYPTED_FLAG:
        raise DirHashError("zip: unsupported compression algorithm")
    with zf.open(info) as entry:
        return _sha256_stream(entry)


def hash_zip_file(fileobj: IO[bytes], prefix_check: str | None = None) -> str:
    """``dirhash.HashZip`` of the zip in ``fileobj`` (open, binary, seekable), streaming.

    Every entry counts, named exactly as stored: directory entries are empty files (so a
    zip with ``mod@v/dir/`` entries does not match the published hash), and a duplicated
    name is hashed twice with its last entry's content, as Go does. With ``prefix_check``
    (e.g. ``"example.com/m@v1.0.0/"``) an entry outside that prefix raises
    :class:`DirHashError` like the go command's ``zip for M@V has unexpected file``. An
    unreadable zip, a bad CRC or a method other than store/deflate also raise it.
    ``fileobj`` is left open.
    """
    try:
        with zipfile.ZipFile(fileobj) as zf:
            infos = zf.infolist()
            names = [_raw_zip_name(info) for info in infos]
            if prefix_check is not None:
                _check_prefix(names, prefix_check)
            by_name = dict(zip(names, infos, strict=True))
            return _summary_hash(names, lambda raw: _entry_digest(zf, by_name[raw]))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise DirHashError(f"zip: {exc}") from exc


def decode_h1(h: str) -> bytes:
    """The 32-byte SHA-256 inside an ``h1:`` hash; :class:`DirHashError` if malformed."""
    if not h.startswith("h1:") or len(h) != 47:
        raise DirHashError(f"malformed h1 hash {h!r}")
    try:
        raw = base64.b64decode(h[3:], validate=True)
    except binascii.Error as exc:
        raise DirHashError(f"malformed h1 hash {h!r}") from exc
    if len(raw) != 32 or base64.b64encode(raw).decode("ascii") != h[3:]:
        raise DirHashError(f"malformed h1 hash {h!r}")
    return raw
