"""The Go checksum database, pure: signed notes, the tamper-evident log, tiles, lookups.

A faithful port of ``golang.org/x/mod/sumdb/note`` (keys, signed notes), ``sumdb/tlog``
(RFC 6962 record and tree hashes, stored hash indexes, proofs, tiles and the
authenticating tile hash reader) and the small parts of ``sumdb`` (the client) and the go
command's ``modfetch`` that turn a ``/lookup/M@V`` answer into verified go.sum hashes.

Nothing here does I/O: callers fetch the lookup body and the tiles named by
:meth:`TileHashReader.hashes_for`, then hand the bytes back. Every error is a
:class:`SumDBError`; messages are Go's, so logs read like the go command's.

A typical verification of one module version::

    lookup = parse_lookup(body)                       # GET <db>/lookup/M@V
    note = open_note(lookup.note, [Verifier.parse(vkey)])
    tree = parse_tree(note.text)
    tiles = record_tiles(tree, lookup.id)             # GET <db>/<tile.path()> for each
    verify_record(tree, lookup.id, lookup.text, fetched)
    zip_h1, mod_h1 = gosum_lines(lookup.text, module, version)
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from router.core import ed25519, modpath

__all__ = [
    "DEFAULT_TILE_HEIGHT",
    "HASH_SIZE",
    "AmbiguousVerifierError",
    "BadTilePathError",
    "ChecksumMismatchError",
    "ForkError",
    "GoSumHashes",
    "HashReader",
    "InconsistentTileError",
    "InvalidSignatureError",
    "InvalidSignerError",
    "KeyFormatError",
    "Lookup",
    "MalformedNoteError",
    "MalformedRecordError",
    "MalformedTreeError",
    "MissingTileError",
    "Note",
    "ProofError",
    "RecordAuthError",
    "Signature",
    "Signer",
    "SumDBError",
    "Tile",
    "TileHashReader",
    "TlogError",
    "Tree",
    "UnknownVerifierError",
    "UnverifiedNoteError",
    "Verifier",
    "VerifierList",
    "check_hash",
    "check_record",
    "check_tree",
    "check_trees",
    "consistency_tiles",
    "format_data_tile",
    "format_hash",
    "format_record",
    "format_tree",
    "generate_key",
    "gosum_lines",
    "hash_from_tile",
    "lookup_path",
    "new_ed25519_verifier_key",
    "new_tiles",
    "node_hash",
    "open_note",
    "parse_hash",
    "parse_lookup",
    "parse_record",
    "parse_tile_path",
    "parse_tree",
    "prove_record",
    "prove_tree",
    "read_tile_data",
    "record_hash",
    "record_proof_indexes",
    "record_tiles",
    "sign_note",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes",
    "stored_hashes_for_record_hash",
    "tile_for_index",
    "tile_path",
    "tree_hash",
    "tree_hash_indexes",
    "tree_proof_indexes",
    "verify_record",
]

HASH_SIZE = 32
DEFAULT_TILE_HEIGHT = 8
"""The tile height the go command uses (and sum.golang.org serves)."""

HashReader = Callable[[Sequence[int]], Sequence[bytes]]
"""Reads the hashes at the given stored hash indexes (``tlog.HashReader``)."""

_ALG_ED25519 = 1
_MAX_SIGNATURES = 100
_SIG_PREFIX = "— ".encode()
_INT64_MAX = (1 << 63) - 1
_PATH_BASE = 1000
_TREE_PREFIX = b"go.sum database tree\n"
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*")
# unicode.IsSpace: the Unicode White_Space property.
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


# ---------------------------------------------------------------------------------- errors


class SumDBError(ValueError):
    """Any checksum-database data that cannot be parsed, verified or trusted."""


class KeyFormatError(SumDBError):
    """A verifier or signer key that ``note.NewVerifier``/``NewSigner`` rejects."""


class MalformedNoteError(SumDBError):
    """A signed note that is not well formed (``malformed note``)."""

    def __init__(self) -> None:
        super().__init__("malformed note")


class InvalidSignerError(SumDBError):
    """A signer whose name cannot appear in a note (``invalid signer``)."""

    def __init__(self) -> None:
        super().__init__("invalid signer")


class _KeyError(SumDBError):
    """An error about one key, named ``name+hash`` like Go prints it."""

    template = "{}"

    def __init__(self, name: str, key_hash: int) -> None:
        self.name = name
        self.key_hash = key_hash
        super().__init__(self.template.format(f"{name}+{key_hash:08x}"))


class UnknownVerifierError(_KeyError):
    """No verifier with that name and key hash is known."""

    template = "unknown key {}"


class AmbiguousVerifierError(_KeyError):
    """Several known verifiers share that name and key hash."""

    template = "ambiguous key {}"


class InvalidSignatureError(_KeyError):
    """A known key's signature does not verify: the note was tampered with."""

    template = "invalid signature for key {}"


class UnverifiedNoteError(SumDBError):
    """A well-formed note that no known verifier signed; ``note`` is what was parsed."""

    def __init__(self, note: Note) -> None:
        self.note = note
        super().__init__("note has no verifiable signatures")


class MalformedTreeError(SumDBError):
    """A tree note text that ``tlog.ParseTree`` rejects."""

    def __init__(self) -> None:
        super().__init__("malformed tree note")


class MalformedRecordError(SumDBError):
    """A record or lookup body that ``tlog.ParseRecord``/``FormatRecord`` rejects."""

    def __init__(self) -> None:
        super().__init__("malformed record data")


class TlogError(SumDBError):
    """Invalid input to a tlog function (bad sizes, indexes outside the tree, bad tiles)."""


class ProofError(TlogError):
    """A record or tree proof that does not check (``invalid transparency proof``)."""

    def __init__(self) -> None:
        super().__init__("invalid transparency proof")


class BadTilePathError(TlogError):
    """A tile path that ``tlog.ParseTilePath`` rejects."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f'malformed tile path "{path}"')


class InconsistentTileError(TlogError):
    """Tiles that do not hash up to the signed tree (``downloaded inconsistent tile``)."""

    def __init__(self) -> None:
        super().__init__("downloaded inconsistent tile")


class MissingTileError(TlogError):
    """A tile the reader needs was not among the fetched ones."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile
        super().__init__(f"missing tile {tile.path()}")


class RecordAuthError(SumDBError):
    """A lookup record that the signed tree does not contain."""


class ForkError(SumDBError):
    """Two signed trees that cannot both be true: the server forked its log.

    ``report`` is the go command's ``SECURITY ERROR`` text, proof included.
    """

    def __init__(self, report: str) -> None:
        self.report = report
        super().__init__(report)


class ChecksumMismatchError(SumDBError):
    """A downloaded hash that differs from the checksum database's."""

    def __init__(self, downloaded: str, expected: str) -> None:
        self.downloaded = downloaded
        self.expected = expected
        super().__init__(f"checksum mismatch: downloaded {downloaded}, database has {expected}")


# --------------------------------------------------------------------------------- helpers


def _b64decode(text: str) -> bytes | None:
    """Go's ``base64.StdEncoding.DecodeString``: padded, strict alphabet, CR/LF ignored."""
    text = text.replace("\r", "").replace("\n", "")
    if len(text) % 4 or not _B64.fullmatch(text):
        return None
    return base64.b64decode(text)


def _b64encode(data: bytes) -> str:
    """Standard padded base64, as text."""
    return base64.b64encode(data).decode("ascii")


def _is_valid_name(name: str) -> bool:
    """``note.isValidName``: non-empty UTF-8 with no Unicode space and no ``+``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(name) and "+" not in name and not any(ch in _GO_SPACE for ch in name)


def _chop(text: str, sep: str) -> tuple[str, str]:
    """Split at the first ``sep``; the second part is empty when there is none."""
    before, _, after = text.partition(sep)
    return before, after


def _key_hash(name: str, key: bytes) -> int:
    """``note.keyHash``: first 4 bytes of SHA-256(name, newline, algorithm byte, key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def _parse_go_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``: optional sign, ASCII digits, int64 range."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


# ------------------------------------------------------------------------------ note keys


@dataclass(frozen=True, slots=True)
class Verifier:
    """An Ed25519 verifier key: ``name+hash+base64(0x01 || 32-byte public key)``."""

    name: str
    key_hash: int
    public_key: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """``note.NewVerifier``; :class:`KeyFormatError` with Go's message on any defect."""
        name, rest = _chop(vkey, "+")
        hash16, key64 = _chop(rest, "+")
        key = _b64decode(key64)
        if not _HEX8.fullmatch(hash16) or key is None or not _is_valid_name(name) or not key:
            raise KeyFormatError("malformed verifier id")
        if int(hash16, 16) != _key_hash(name, key):
            raise KeyFormatError("invalid verifier hash")
        if key[0] != _ALG_ED25519:
            raise KeyFormatError("unknown verifier algorithm")
        if len(key) != 33:
            raise KeyFormatError("malformed verifier id")
        return cls(name, int(hash16, 16), key[1:])

    @property
    def vkey(self) -> str:
        """The encoded verifier key (what GOSUMDB takes)."""
        encoded = _b64encode(bytes([_ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_hash:08x}+{encoded}"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True when ``sig`` is this key's Ed25519 signature of ``msg``."""
        return ed25519.verify(self.public_key, msg, sig)


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 signer key: ``PRIVATE+KEY+name+hash+base64(0x01 || 32-byte seed)``."""

    name: str
    key_hash: int
    seed: bytes = field(repr=False)

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """``note.NewSigner``; :class:`KeyFormatError` (Go reuses the verifier messages)."""
        priv1, rest = _chop(skey, "+")
        priv2, rest = _chop(rest, "+")
        name, rest = _chop(rest, "+")
        hash16, key64 = _chop(rest, "+")
        key = _b64decode(key64)
        if (priv1, priv2) != ("PRIVATE", "KEY") or not _HEX8.fullmatch(hash16):
            raise KeyFormatError("malformed verifier id")
        if key is None or not _is_valid_name(name) or not key:
            raise KeyFormatError("malformed verifier id")
        if key[0] != _ALG_ED25519:
            raise KeyFormatError("unknown verifier algorithm")
        if len(key) != 33:
            raise KeyFormatError("malformed verifier id")
        signer = cls(name, int(hash16, 16), key[1:])
        if signer.key_hash != _key_hash(name, bytes([_ALG_ED25519]) + signer.public_key):
            raise KeyFormatError("invalid verifier hash")
        return signer

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key derived from the seed."""
        return ed25519.public_key(self.seed)

    @property
    def skey(self) -> str:
        """The encoded signer key."""
        encoded = _b64encode(bytes([_ALG_ED25519]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_hash:08x}+{encoded}"

    @property
    def verifier(self) -> Verifier:
        """The matching verifier."""
        return Verifier(self.name, self.key_hash, self.public_key)

    def sign(self, msg: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``msg`` (deterministic)."""
        return ed25519.sign(self.seed, msg)


def new_ed25519_verifier_key(name: str, public_key: bytes) -> str:
    """``note.NewEd25519VerifierKey``: the vkey for a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise KeyFormatError(f"invalid public key size {len(public_key)}, expected 32")
    key = bytes([_ALG_ED25519]) + public_key
    return f"{name}+{_key_hash(name, key):08x}+{_b64encode(key)}"


def generate_key(name: str, rand: Callable[[int], bytes]) -> tuple[str, str]:
    """``note.GenerateKey``: a fresh ``(skey, vkey)`` pair for ``name``.

    ``rand(32)`` supplies the Ed25519 seed (``os.urandom``, or a fixed one for
    reproducible keys).
    """
    seed = rand(32)
    if len(seed) != 32:
        raise KeyFormatError("generate_key: rand returned a seed that is not 32 bytes")
    public = Signer(name, 0, seed).public_key
    key_hash = _key_hash(name, bytes([_ALG_ED25519]) + public)
    signer = Signer(name, key_hash, seed)
    return signer.skey, signer.verifier.vkey


class VerifierList:
    """Known verifiers by ``(name, key hash)`` (``note.VerifierList``)."""

    __slots__ = ("_by_key",)

    def __init__(self, verifiers: Iterable[Verifier] = ()) -> None:
        by_key: dict[tuple[str, int], list[Verifier]] = {}
        for v in verifiers:
            by_key.setdefault((v.name, v.key_hash), []).append(v)
        self._by_key = by_key

    def verifier(self, name: str, key_hash: int) -> Verifier:
        """The one verifier for ``name``/``key_hash``; unknown or ambiguous raise."""
        found = self._by_key.get((name, key_hash))
        if found is None:
            raise UnknownVerifierError(name, key_hash)
        if len(found) > 1:
            raise AmbiguousVerifierError(name, key_hash)
        return found[0]


# ----------------------------------------------------------------------------- signed notes


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line of a note: signer name, key hash and the base64 as written."""

    name: str
    key_hash: int
    base64: str


@dataclass(frozen=True, slots=True)
class Note:
    """A note's text (ending in a newline) and its verified and unverified signatures."""

    text: str
    sigs: tuple[Signature, ...] = ()
    unverified_sigs: tuple[Signature, ...] = ()


def _check_note_chars(msg: bytes) -> None:
    """A note is valid UTF-8 without control characters other than newline."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError() from None
    if any(ch < " " and ch != "\n" for ch in decoded):
        raise MalformedNoteError()


def _split_note(msg: bytes) -> tuple[bytes, list[bytes]]:
    """The text (through its final newline) and the signature lines after the blank line."""
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError()
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs.endswith(b"\n"):
        raise MalformedNoteError()
    return text, sigs[:-1].split(b"\n")


def _parse_sig_line(line: bytes) -> tuple[Signature, bytes]:
    """One ``— name base64`` line: the signature and the raw Ed25519 bytes."""
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError()
    name, b64 = _chop(line[len(_SIG_PREFIX) :].decode("utf-8"), " ")
    raw = _b64decode(b64)
    if raw is None or not _is_valid_name(name) or not b64 or len(raw) < 5:
        raise MalformedNoteError()
    return Signature(name, int.from_bytes(raw[:4], "big"), b64), raw[4:]


def _as_verifiers(known: VerifierList | Iterable[Verifier] | None) -> VerifierList:
    """Accept a ready :class:`VerifierList` or any iterable of verifiers."""
    if isinstance(known, VerifierList):
        return known
    return VerifierList(known or ())


def open_note(msg: bytes, known: VerifierList | Iterable[Verifier] | None) -> Note:
    """``note.Open``: parse ``msg`` and verify the signatures of the ``known`` keys.

    Unknown signers are kept in ``unverified_sigs``; repeats are dropped; more than 100
    signature lines is malformed. Raises :class:`MalformedNoteError`,
    :class:`InvalidSignatureError` (a known key's signature is wrong),
    :class:`AmbiguousVerifierError` or :class:`UnverifiedNoteError` (no known signer).
    """
    verifiers = _as_verifiers(known)
    _check_note_chars(msg)
    text, lines = _split_note(msg)
    sigs: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for count, line in enumerate(lines, start=1):
        sig, raw = _parse_sig_line(line)
        if count > _MAX_SIGNATURES:
            raise MalformedNoteError()
        try:
            v = verifiers.verifier(sig.name, sig.key_hash)
        except UnknownVerifierError:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if (sig.name, sig.key_hash) in seen:
            continue
        seen.add((sig.name, sig.key_hash))
        if not v.verify(text, raw):
            raise InvalidSignatureError(sig.name, sig.key_hash)
        sigs.append(sig)
    note = Note(text.decode("utf-8"), tuple(sigs), tuple(unverified))
    if not sigs:
        raise UnverifiedNoteError(note)
    return note


def _kept_signature_line(sig: Signature, replaced: set[tuple[str, int]]) -> str:
    """An existing signature to re-emit ("" if a new signer replaces it)."""
    if not _is_valid_name(sig.name):
        raise MalformedNoteError()
    if (sig.name, sig.key_hash) in replaced:
        return ""
    raw = _b64decode(sig.base64)
    if raw is None or len(raw) < 4 or int.from_bytes(raw[:4], "big") != sig.key_hash:
        raise MalformedNoteError()
    return f"— {sig.name} {sig.base64}\n"


def sign_note(note: Note | str, *signers: Signer) -> bytes:
    """``note.Sign``: the note text, a blank line, kept old signatures, then new ones.

    Old signatures (``note.sigs`` and ``note.unverified_sigs``) by the same key as a new
    signer are dropped. The text must end in a newline (:class:`MalformedNoteError`).
    """
    if isinstance(note, str):
        note = Note(note)
    if not note.text.endswith("\n"):
        raise MalformedNoteError()
    text = note.text.encode("utf-8")
    new_lines: list[str] = []
    for s in signers:
        if not _is_valid_name(s.name):
            raise InvalidSignerError()
        encoded = _b64encode(s.key_hash.to_bytes(4, "big") + s.sign(text))
        new_lines.append(f"— {s.name} {encoded}\n")
    replaced = {(s.name, s.key_hash) for s in signers}
    kept = [_kept_signature_line(sig, replaced) for sig in (*note.sigs, *note.unverified_sigs)]
    return text + b"\n" + "".join(kept + new_lines).encode("utf-8")


# ----------------------------------------------------------------------- trees and records


@dataclass(frozen=True, slots=True)
class Tree:
    """A log tree head: ``n`` records and the root ``hash`` (32 bytes)."""

    n: int
    hash: bytes


def format_hash(h: bytes) -> str:
    """A hash as Go prints it: standard base64."""
    return _b64encode(h)


def parse_hash(text: str) -> bytes:
    """``tlog.ParseHash``: base64 of exactly 32 bytes."""
    raw = _b64decode(text)
    if raw is None or len(raw) != HASH_SIZE:
        raise SumDBError("malformed hash")
    return raw


def format_tree(tree: Tree) -> bytes:
    """``tlog.FormatTree``: ``go.sum database tree\\nN\\nHASH\\n``."""
    return _TREE_PREFIX + f"{tree.n}\n{format_hash(tree.hash)}\n".encode("ascii")


def parse_tree(text: bytes | str) -> Tree:
    """``tlog.ParseTree``; lines after the third are ignored (forward compatibility)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not data.startswith(_TREE_PREFIX) or data.count(b"\n") < 3 or len(data) > 1_000_000:
        raise MalformedTreeError()
    lines = data.decode("utf-8", "surrogateescape").split("\n", 3)
    if not _CANONICAL_DECIMAL.fullmatch(lines[1]) or int(lines[1]) > _INT64_MAX:
        raise MalformedTreeError()
    raw = _b64decode(lines[2])
    if raw is None or len(raw) != HASH_SIZE:
        raise MalformedTreeError()
    return Tree(int(lines[1]), raw)


def _is_valid_record_text(text: bytes) -> bool:
    """UTF-8, no control characters but newline, no blank line, ending in a newline."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if any(ch < " " and ch != "\n" for ch in decoded) or "\n\n" in decoded:
        return False
    return decoded.endswith("\n")


def format_record(record_id: int, text: bytes) -> bytes:
    """``tlog.FormatRecord``: ``"<id>\\n" + text + "\\n"``."""
    if not _is_valid_record_text(text):
        raise MalformedRecordError()
    return f"{record_id}\n".encode("ascii") + text + b"\n"


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """``tlog.ParseRecord``: ``(id, text, rest)`` of ``"<id>\\n<text>\\n<rest>"``."""
    newline = msg.find(b"\n")
    record_id = _parse_go_int(msg[:newline].decode("ascii", "replace")) if newline >= 0 else None
    if record_id is None:
        raise MalformedRecordError()
    body = msg[newline + 1 :]
    blank = body.find(b"\n\n")
    if blank < 0 or not _is_valid_record_text(body[: blank + 1]):
        raise MalformedRecordError()
    return record_id, body[: blank + 1], body[blank + 2 :]


class Lookup(NamedTuple):
    """A parsed ``/lookup/M@V`` answer."""

    id: int
    text: bytes
    note: bytes


def parse_lookup(body: bytes) -> Lookup:
    """Split a lookup answer into record id, record text (go.sum lines) and signed tree."""
    return Lookup(*parse_record(body))


def format_data_tile(records: Sequence[bytes], first_id: int | None = None) -> bytes:
    """A ``tile/H/data/...`` body for ``records``.

    With ``first_id`` it is what ``x/mod/sumdb/server.go`` serves (each record as
    :func:`format_record` with its id); without, what sum.golang.org serves (each record's
    text followed by a blank line, no ids).
    """
    if first_id is None:
        return b"".join(text + b"\n" for text in records)
    return b"".join(format_record(first_id + i, text) for i, text in enumerate(records))


# ------------------------------------------------------------------------ log hashing


def record_hash(data: bytes) -> bytes:
    """``tlog.RecordHash``: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``tlog.NodeHash``: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _maxpow2(n: int) -> tuple[int, int]:
    """The largest power of two smaller than ``n`` (1 for n <= 2), and its log2."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def _trailing_zeros(n: int) -> int:
    """The number of trailing zero bits of ``n`` (``bits.TrailingZeros64``)."""
    return (n & -n).bit_length() - 1


def stored_hash_index(level: int, n: int) -> int:
    """``tlog.StoredHashIndex``: where hash ``(level, n)`` sits in the dense hash storage."""
    for _ in range(level):
        n = 2 * n + 1
    index = 0
    while n > 0:
        index += n
        n >>= 1
    return index + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """``tlog.SplitStoredHashIndex``: the ``(level, n)`` stored at ``index``."""
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        nxt = index_n + 1 + _trailing_zeros(n + 1)
        if nxt > index:
            break
        n += 1
        index_n = nxt
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """``tlog.StoredHashCount``: how many hashes a log of ``n`` records stores."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def _read(reader: HashReader, indexes: Sequence[int]) -> list[bytes]:
    """Call ``reader`` and insist on one hash per index."""
    hashes = list(reader(indexes))
    if len(hashes) != len(indexes):
        raise TlogError(f"tlog: ReadHashes({len(indexes)} indexes) = {len(hashes)} hashes")
    return hashes


def stored_hashes_for_record_hash(n: int, h: bytes, reader: HashReader) -> list[bytes]:
    """``tlog.StoredHashesForRecordHash``: the hashes to append when adding record ``n``."""
    m = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(m - 1 - i, (n >> (m - 1 - i)) - 1) for i in range(m)]
    old = _read(reader, indexes)
    hashes = [h]
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """``tlog.StoredHashes``: the hashes to append when adding record ``n`` with ``data``."""
    return stored_hashes_for_record_hash(n, record_hash(data), reader)


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Indexes of the stored hashes that make up the subtree of records [lo, hi)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """The hash of records [lo, hi) from the hashes named by ``_sub_tree_index``; leftovers."""
    count = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        count += 1
        lo += k
    if len(hashes) < count:
        raise RuntimeError("tlog: bad index math in subTreeHash")
    h = hashes[count - 1]
    for i in range(count - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[count:]


def tree_hash_indexes(n: int) -> list[int]:
    """The stored hash indexes :func:`tree_hash` reads for a tree of ``n`` records."""
    return _sub_tree_index(0, n, [])


def tree_hash(n: int, reader: HashReader) -> bytes:
    """``tlog.TreeHash``: the root of the first ``n`` records (all zeros for ``n == 0``)."""
    if n == 0:
        return bytes(HASH_SIZE)
    indexes = tree_hash_indexes(n)
    h, rest = _sub_tree_hash(0, n, _read(reader, indexes))
    if rest:
        raise RuntimeError("tlog: bad index math in TreeHash")
    return h


# ---------------------------------------------------------------------------- record proofs


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    """Indexes needed to prove leaf ``n`` is in the subtree [lo, hi) (RFC 6962 2.1.1)."""
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        return _sub_tree_index(lo + k, hi, need)
    _sub_tree_index(lo, lo + k, need)
    return _leaf_proof_index(lo + k, hi, n, need)


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The audit path of leaf ``n`` in [lo, hi) from ``_leaf_proof_index`` hashes; leftovers."""
    if lo + 1 == hi:
        return [], hashes
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof, hashes = _leaf_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        proof, hashes = _leaf_proof(lo + k, hi, n, hashes)
    return [*proof, th], hashes


def record_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hash indexes :func:`prove_record` reads."""
    if t < 0 or n < 0 or n >= t:
        raise TlogError("tlog: invalid inputs in ProveRecord")
    return _leaf_proof_index(0, t, n, [])


def prove_record(t: int, n: int, reader: HashReader) -> list[bytes]:
    """``tlog.ProveRecord``: the audit path showing the tree of size ``t`` holds record ``n``."""
    indexes = record_proof_indexes(t, n)
    if not indexes:
        return []
    proof, rest = _leaf_proof(0, t, n, _read(reader, indexes))
    if rest:
        raise RuntimeError("tlog: bad index math in ProveRecord")
    return proof


def _run_record_proof(proof: Sequence[bytes], lo: int, hi: int, n: int, leaf: bytes) -> bytes:
    """The subtree hash of [lo, hi) implied by ``proof`` and the leaf hash."""
    if lo + 1 == hi:
        if proof:
            raise ProofError()
        return leaf
    if not proof:
        raise ProofError()
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(proof[:-1], lo, lo + k, n, leaf), proof[-1])
    return node_hash(proof[-1], _run_record_proof(proof[:-1], lo + k, hi, n, leaf))


def check_record(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """``tlog.CheckRecord``: raise unless ``proof`` shows tree (t, th) has record n with hash h."""
    if t < 0 or n < 0 or n >= t:
        raise TlogError("tlog: invalid inputs in CheckRecord")
    if _run_record_proof(proof, 0, t, n, h) != th:
        raise ProofError()


# ------------------------------------------------------------------------------ tree proofs


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    """Indexes needed for the consistency sub-proof over [lo, hi) (RFC 6962 2.1.2)."""
    if n == hi:
        return need if lo == 0 else _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        return _sub_tree_index(lo + k, hi, need)
    _sub_tree_index(lo, lo + k, need)
    return _tree_proof_index(lo + k, hi, n, need)


def _tree_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The consistency sub-proof over [lo, hi) from ``_tree_proof_index`` hashes; leftovers."""
    if n == hi:
        if lo == 0:
            return [], hashes
        th, hashes = _sub_tree_hash(lo, hi, hashes)
        return [th], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, hashes = _tree_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        proof, hashes = _tree_proof(lo + k, hi, n, hashes)
    return [*proof, th], hashes


def tree_proof_indexes(t: int, n: int) -> list[int]:
    """The stored hash indexes :func:`prove_tree` reads."""
    if t < 1 or n < 1 or n > t:
        raise TlogError("tlog: invalid inputs in ProveTree")
    return _tree_proof_index(0, t, n, [])


def prove_tree(t: int, n: int, reader: HashReader) -> list[bytes]:
    """``tlog.ProveTree``: the consistency proof that tree ``t`` extends tree ``n``."""
    indexes = tree_proof_indexes(t, n)
    if not indexes:
        return []
    proof, rest = _tree_proof(0, t, n, _read(reader, indexes))
    if rest:
        raise RuntimeError("tlog: bad index math in ProveTree")
    return proof


def _run_tree_proof(
    proof: Sequence[bytes], lo: int, hi: int, n: int, old: bytes
) -> tuple[bytes, bytes]:
    """The implied (old tree, new tree) hashes of the subtree [lo, hi)."""
    if n == hi:
        if lo == 0:
            if proof:
                raise ProofError()
            return old, old
        if len(proof) != 1:
            raise ProofError()
        return proof[0], proof[0]
    if not proof:
        raise ProofError()
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(proof[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, proof[-1])
    oh, th = _run_tree_proof(proof[:-1], lo + k, hi, n, old)
    return node_hash(proof[-1], oh), node_hash(proof[-1], th)


def check_tree(proof: Sequence[bytes], t: int, th: bytes, n: int, h: bytes) -> None:
    """``tlog.CheckTree``: raise unless ``proof`` shows tree (t, th) extends tree (n, h)."""
    if t < 1 or n < 1 or n > t:
        raise TlogError("tlog: invalid inputs in CheckTree")
    h2, th2 = _run_tree_proof(proof, 0, t, n, h)
    if th2 != th or h2 != h:
        raise ProofError()


# ------------------------------------------------------------------------------------ tiles


@dataclass(frozen=True, slots=True, order=True)
class Tile:
    """A tile of height ``H`` at level ``L`` (-1 for record data), number ``N``, width ``W``."""

    H: int
    L: int
    N: int
    W: int

    def path(self) -> str:
        """``Tile.Path``: ``tile/H/L/NNN[.p/W]`` with N in x-prefixed groups of three digits."""
        n = self.N
        n_str = f"{n % _PATH_BASE:03d}"
        while n >= _PATH_BASE:
            n //= _PATH_BASE
            n_str = f"x{n % _PATH_BASE:03d}/{n_str}"
        partial = f".p/{self.W}" if self.W != 1 << self.H else ""
        level = "data" if self.L == -1 else str(self.L)
        return f"tile/{self.H}/{level}/{n_str}{partial}"


def tile_path(tile: Tile) -> str:
    """The tile's path (see :meth:`Tile.path`)."""
    return tile.path()


def _parse_path_number(text: str, low: int, high: int) -> int | None:
    """``strconv.Atoi`` restricted to ``low <= value < high``."""
    value = _parse_go_int(text)
    return value if value is not None and low <= value < high else None


def parse_tile_path(path: str) -> Tile:
    """``tlog.ParseTilePath``: the tile at a canonical ``tile/...`` path, else raise."""
    f = path.split("/")
    if len(f) < 4 or f[0] != "tile":
        raise BadTilePathError(path)
    h = _parse_path_number(f[1], 1, 31)
    level = -1 if f[2] == "data" else _parse_path_number(f[2], 0, _INT64_MAX)
    if h is None or level is None:
        raise BadTilePathError(path)
    w = 1 << h
    if f[-2].endswith(".p"):
        width = _parse_path_number(f[-1], 1, w)
        if width is None:
            raise BadTilePathError(path)
        w = width
        f = [*f[:-2], f[-2][: -len(".p")]]
    n = 0
    for part in f[3:]:
        digits = _parse_path_number(part.removeprefix("x"), 0, _PATH_BASE)
        if digits is None:
            raise BadTilePathError(path)
        n = n * _PATH_BASE + digits
    tile = Tile(h, level, n, w)
    if tile.path() != path:
        raise BadTilePathError(path)
    return tile


def _tile_for_index(h: int, index: int) -> tuple[Tile, int, int]:
    """The least-width tile of height ``h`` holding ``index``, and the byte range in it."""
    level, n = split_stored_hash_index(index)
    tile_level = level // h
    level -= tile_level * h
    tile_n = (n << level) >> h
    n -= (tile_n << h) >> level
    tile = Tile(h, tile_level, tile_n, (n + 1) << level)
    return tile, (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


def tile_for_index(h: int, index: int) -> Tile:
    """``tlog.TileForIndex``: the least-width tile of height ``h`` storing ``index``."""
    if h <= 0:
        raise TlogError(f"TileForIndex: invalid height {h}")
    return _tile_for_index(h, index)[0]


def _tile_hash(data: bytes) -> bytes:
    """The subtree hash over the bottom-row hashes in ``data``."""
    if len(data) == HASH_SIZE:
        return data
    half = len(data) // 2
    return node_hash(_tile_hash(data[:half]), _tile_hash(data[half:]))


def hash_from_tile(tile: Tile, data: bytes, index: int) -> bytes:
    """``tlog.HashFromTile``: the hash at ``index`` computed from tile ``tile``'s ``data``."""
    if not (1 <= tile.H <= 30 and 0 <= tile.L < 64 and 1 <= tile.W <= 1 << tile.H):
        raise TlogError(f"invalid tile {tile.path()}")
    if len(data) < tile.W * HASH_SIZE:
        raise TlogError(f"data len {len(data)} too short for tile {tile.path()}")
    t1, start, end = _tile_for_index(tile.H, index)
    if tile.L != t1.L or tile.N != t1.N or tile.W < t1.W:
        raise TlogError(f"index {index} is in {t1.path()} not {tile.path()}")
    return _tile_hash(data[start:end])


def new_tiles(h: int, old_size: int, new_size: int) -> list[Tile]:
    """``tlog.NewTiles``: the tiles to publish when the log grows from old to new size."""
    if h <= 0:
        raise TlogError(f"NewTiles: invalid height {h}")
    tiles: list[Tile] = []
    level = 0
    while new_size >> (h * level) > 0:
        old_n, new_n = old_size >> (h * level), new_size >> (h * level)
        if old_n != new_n:
            tiles += [Tile(h, level, n, 1 << h) for n in range(old_n >> h, new_n >> h)]
            n = new_n >> h
            if new_n - (n << h) > 0:
                tiles.append(Tile(h, level, n, new_n - (n << h)))
        level += 1
    return tiles


def read_tile_data(tile: Tile, reader: HashReader) -> bytes:
    """``tlog.ReadTileData``: the bytes of hash tile ``tile`` from stored hashes."""
    start = tile.N << tile.H
    indexes = [stored_hash_index(tile.H * tile.L, start + i) for i in range(tile.W)]
    return b"".join(_read(reader, indexes))


def _tile_parent(tile: Tile, k: int, n: int) -> Tile | None:
    """Tile ``tile``'s ``k``-th parent in a tree of ``n`` records, widened to what exists."""
    level, number, width = tile.L + k, tile.N >> (k * tile.H), 1 << tile.H
    limit = n >> (level * tile.H)
    if (number << tile.H) + width >= limit:
        if number << tile.H >= limit:
            return None
        width = limit - (number << tile.H)
    return Tile(tile.H, level, number, width)


@dataclass(frozen=True, slots=True)
class _TilePlan:
    """Which tiles a read needs, in authentication order (parents before children)."""

    tiles: list[Tile]
    stx: list[int]
    stx_order: list[int]
    index_order: list[int]
    stx_tiles: int


@dataclass(frozen=True, slots=True)
class TileHashReader:
    """Reads stored hashes of a signed ``tree`` out of tiles of height ``height``.

    The pure half of ``tlog.TileHashReader``: :meth:`hashes_for` names the tiles to fetch,
    :meth:`read_hashes` checks them against the tree hash (so every hash it returns is
    proven to be in the tree) and extracts the hashes. Use it as a :data:`HashReader`
    with ``functools.partial(reader.read_hashes, fetched_tiles)``.
    """

    tree: Tree
    height: int = DEFAULT_TILE_HEIGHT

    def hashes_for(self, indexes: Sequence[int]) -> list[Tile]:
        """The tiles :meth:`read_hashes` needs for ``indexes`` (each one fetched once)."""
        return list(self._plan(indexes).tiles)

    def read_hashes(self, tiles: Mapping[Tile, bytes], indexes: Sequence[int]) -> list[bytes]:
        """The hashes at ``indexes``, authenticated against the tree.

        ``tiles`` maps tiles to their bytes; a needed partial tile may instead be given
        as its full-width tile (trimmed, as the go client does). Raises
        :class:`MissingTileError`, :class:`InconsistentTileError` or :class:`TlogError`.
        """
        plan = self._plan(indexes)
        data = [self._tile_data(tiles, tile) for tile in plan.tiles]
        self._authenticate(plan, data)
        hashes = []
        for x, j in zip(indexes, plan.index_order, strict=True):
            hashes.append(hash_from_tile(plan.tiles[j], data[j], x))
        return hashes

    def _plan(self, indexes: Sequence[int]) -> _TilePlan:
        """Plan tiles: first those for the tree hash, then each index's tile and parents."""
        order: dict[Tile, int] = {}
        tiles: list[Tile] = []
        stx = tree_hash_indexes(self.tree.n)
        stx_order = [self._add(order, tiles, self._own_tile(x)) for x in stx]
        stx_tiles = len(tiles)
        limit = stored_hash_index(0, self.tree.n)
        index_order = []
        for x in indexes:
            if x < 0 or x >= limit:
                raise TlogError("indexes not in tree")
            index_order.append(self._plan_index(order, tiles, x))
        return _TilePlan(tiles, stx, stx_order, index_order, stx_tiles)

    def _own_tile(self, index: int) -> Tile:
        """The tile holding ``index``, as wide as the tree allows."""
        tile = _tile_parent(tile_for_index(self.height, index), 0, self.tree.n)
        if tile is None:
            raise RuntimeError("bad math in tileHashReader")
        return tile

    @staticmethod
    def _add(order: dict[Tile, int], tiles: list[Tile], tile: Tile) -> int:
        """Plan ``tile`` once; its position in the plan."""
        if tile not in order:
            order[tile] = len(tiles)
            tiles.append(tile)
        return order[tile]

    def _plan_index(self, order: dict[Tile, int], tiles: list[Tile], index: int) -> int:
        """Plan the tile for ``index`` and any full tiles between it and a planned parent."""
        tile = tile_for_index(self.height, index)
        k = 0
        while (parent := _tile_parent(tile, k, self.tree.n)) not in order:
            k += 1
            if parent is None:
                raise RuntimeError("bad math in tileHashReader: no planned parent")
        for down in range(k - 1, -1, -1):
            child = _tile_parent(tile, down, self.tree.n)
            if child is None or child.W != 1 << child.H:
                raise TlogError(f"bad math in tileHashReader: {self.tree.n} {index} {child}")
            self._add(order, tiles, child)
        own = _tile_parent(tile, 0, self.tree.n)
        assert own is not None
        return order[own]

    @staticmethod
    def _tile_data(fetched: Mapping[Tile, bytes], tile: Tile) -> bytes:
        """The fetched bytes of ``tile`` (or the prefix of its full tile), size-checked."""
        data = fetched.get(tile)
        if data is None:
            full = fetched.get(replace(tile, W=1 << tile.H))
            if full is None:
                raise MissingTileError(tile)
            data = full[: len(full) // (1 << tile.H) * tile.W]
        if len(data) != tile.W * HASH_SIZE:
            raise TlogError(
                f"TileReader returned bad result slice ({tile.path()} len={len(data)}, "
                f"want {tile.W * HASH_SIZE})"
            )
        return data

    def _authenticate(self, plan: _TilePlan, data: list[bytes]) -> None:
        """Tree-hash tiles against the signed root, then every other tile against its parent."""
        if plan.stx:
            parts = [
                hash_from_tile(plan.tiles[j], data[j], x)
                for x, j in zip(plan.stx, plan.stx_order, strict=True)
            ]
            th = parts[-1]
            for h in reversed(parts[:-1]):
                th = node_hash(h, th)
            if th != self.tree.hash:
                raise InconsistentTileError()
        # Go's loop starts at len(stx), skipping planned tiles when stx tiles repeat;
        # starting after the distinct stx tiles authenticates every one of them.
        order = {tile: i for i, tile in enumerate(plan.tiles)}
        for i in range(plan.stx_tiles, len(plan.tiles)):
            tile = plan.tiles[i]
            parent = _tile_parent(tile, 1, self.tree.n)
            j = order.get(parent) if parent is not None else None
            if parent is None or j is None:
                raise RuntimeError(f"bad math in tileHashReader: lost parent of {tile}")
            want = hash_from_tile(parent, data[j], stored_hash_index(parent.L * parent.H, tile.N))
            if want != _tile_hash(data[i]):
                raise InconsistentTileError()


# ------------------------------------------------------------------- client-side checks


def record_tiles(tree: Tree, record_id: int, height: int = DEFAULT_TILE_HEIGHT) -> list[Tile]:
    """The tiles :func:`verify_record` needs to check record ``record_id`` in ``tree``."""
    if record_id < 0 or record_id >= tree.n:
        return []
    return TileHashReader(tree, height).hashes_for([stored_hash_index(0, record_id)])


def verify_record(
    tree: Tree,
    record_id: int,
    text: bytes,
    tiles: Mapping[Tile, bytes],
    height: int = DEFAULT_TILE_HEIGHT,
) -> None:
    """The sumdb client's ``checkRecord``: raise unless ``tree`` holds ``text`` at ``record_id``."""
    if record_id < 0 or record_id >= tree.n:
        raise RecordAuthError(f"cannot validate record {record_id} in tree of size {tree.n}")
    reader = TileHashReader(tree, height)
    (h,) = reader.read_hashes(tiles, [stored_hash_index(0, record_id)])
    if h != record_hash(text):
        raise RecordAuthError("cannot authenticate record data in server response")


def consistency_tiles(older: Tree, newer: Tree, height: int = DEFAULT_TILE_HEIGHT) -> list[Tile]:
    """The tiles :func:`check_trees` needs (``older.n <= newer.n``), proof tiles included."""
    indexes = tree_hash_indexes(older.n)
    if 1 <= older.n <= newer.n:
        indexes += tree_proof_indexes(newer.n, older.n)
    return TileHashReader(newer, height).hashes_for(sorted(set(indexes)))


def _fork_report(older_note: bytes, newer_note: bytes, h: bytes, proof_text: str) -> str:
    """The go command's SECURITY ERROR text for two inconsistent signed trees."""

    def indent(note: bytes) -> str:
        return note.decode("utf-8", "replace").replace("\n", "\n\t")

    return (
        "SECURITY ERROR\ngo.sum database server misbehavior detected!\n\n"
        f"old database:\n\t{indent(older_note)}\nnew database:\n\t{indent(newer_note)}\n"
        f"proof of misbehavior:\n\t{format_hash(h)}{proof_text}"
    )


def _misbehavior_proof(reader: HashReader, older: Tree, newer: Tree, h: bytes) -> str:
    """The proof lines of the report: ProveTree(newer, older) over the newer log."""
    try:
        proof = prove_tree(newer.n, older.n, reader)
    except SumDBError as exc:
        return f"\tinternal error: {exc}\n"
    try:
        check_tree(proof, newer.n, newer.hash, older.n, h)
    except SumDBError:
        return "\tinternal error: generated inconsistent proof\n"
    return "".join(f"\n\t{format_hash(p)}" for p in proof)


def check_trees(
    older: Tree,
    older_note: bytes,
    newer: Tree,
    newer_note: bytes,
    tiles: Mapping[Tile, bytes],
    height: int = DEFAULT_TILE_HEIGHT,
) -> None:
    """The sumdb client's ``checkTrees``: raise unless ``newer`` extends ``older``.

    Bad tiles raise :class:`SumDBError` ``checking tree#N[ against tree#M]: ...``; a real
    fork raises :class:`ForkError` whose ``report`` is the go command's SECURITY ERROR.
    """
    reader = TileHashReader(newer, height)

    def read(indexes: Sequence[int]) -> list[bytes]:
        return reader.read_hashes(tiles, indexes)

    try:
        h = tree_hash(older.n, read)
    except SumDBError as exc:
        where = f"tree#{older.n}" + (f" against tree#{newer.n}" if older.n != newer.n else "")
        raise SumDBError(f"checking {where}: {exc}") from exc
    if h != older.hash:
        proof = _misbehavior_proof(read, older, newer, h)
        raise ForkError(_fork_report(older_note, newer_note, h, proof))


# ------------------------------------------------------------------------- go.sum answers


class GoSumHashes(NamedTuple):
    """The ``h1:`` hashes a record gives one module version (None when absent)."""

    zip: str | None
    mod: str | None


def lookup_path(module: str, version: str) -> str:
    """``/lookup/<escaped path>@<escaped version>`` as the go command asks (``/go.mod`` dropped)."""
    version = version.removesuffix("/go.mod")
    return f"/lookup/{modpath.escape_path(module)}@{modpath.escape_version(version)}"


def _record_lines(record_text: bytes) -> list[str]:
    """The lines of a record's text."""
    return record_text.decode("utf-8", "replace").split("\n")


def _first_h1(lines: Sequence[str], prefix: str) -> str | None:
    """The ``h1:`` hash of the first line starting with ``prefix`` (which ends in ``h1:``)."""
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) - len("h1:") :]
    return None


def gosum_lines(record_text: bytes, module: str, version: str) -> GoSumHashes:
    """The zip and ``/go.mod`` ``h1:`` hashes the record gives ``module@version``.

    Like the go command, the first line starting ``"<module> <version>[/go.mod] h1:"``
    counts; lines for other modules or hash algorithms are ignored.
    """
    lines = _record_lines(record_text)
    return GoSumHashes(
        _first_h1(lines, f"{module} {version} h1:"),
        _first_h1(lines, f"{module} {version}/go.mod h1:"),
    )


def check_hash(record_text: bytes, module: str, version: str, h: str) -> None:
    """The go command's ``checkSumDB`` for one downloaded hash.

    ``version`` ends in ``/go.mod`` for the go.mod hash. Accepts when the exact go.sum
    line appears before any other ``h1:`` line for the same key (or no such line exists,
    as Go does); otherwise raises :class:`ChecksumMismatchError`.
    """
    have = f"{module} {version} {h}"
    prefix = f"{module} {version} h1:"
    for line in _record_lines(record_text):
        if line == have:
            return
        if line.startswith(prefix):
            raise ChecksumMismatchError(h, line[len(prefix) - len("h1:") :])
