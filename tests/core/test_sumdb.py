"""``router.core.sumdb`` against the Go team's note/tlog vectors, and the test checksum DB.

The vectors live in ``tests/data/conformance/sumdb_note_tlog_vectors.txt``; a missing
file is a failure, not a skip. The file is
prose with values in it, not a table, so :func:`load_vectors` parses each of its five
sections explicitly and asserts it found every item; every parsed item is checked below.
Two places where the file and Go's source disagree are handled explicitly and say so:
``TreeHash(0)`` (Go returns an all-zero hash, the file says SHA-256 of nothing) and the
``unknown key`` message for the misspelt name ``PeterNeuman``.

The second half checks ``support.sumdb_server.TestSumDB``: byte for byte against the
derived vectors, with this package's pure client over HTTP, and with the real go command
(``e2e``): right hashes are accepted, wrong ones, a tampered signature and a forked log
are refused the way the go command refuses them.
"""

from __future__ import annotations

import ast
import base64
import codecs
import functools
import hashlib
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from support.data import conformance_file
from support.gocmd import CompletedGo, go_env, run_go, run_go_sync
from support.gomod import hash_mod, hash_module, simple_module
from support.goproxy_server import FixtureProxy
from support.sumdb_server import GO_TEST_SKEY, GO_TEST_VKEY, TestSumDB

from router.core import modpath
from router.core.sumdb import (
    DEFAULT_TILE_HEIGHT,
    AmbiguousVerifierError,
    BadTilePathError,
    ChecksumMismatchError,
    ForkError,
    InconsistentTileError,
    InvalidSignatureError,
    InvalidSignerError,
    KeyFormatError,
    MalformedNoteError,
    MalformedRecordError,
    MalformedTreeError,
    MissingTileError,
    Note,
    ProofError,
    RecordAuthError,
    Signature,
    Signer,
    SumDBError,
    Tile,
    TileHashReader,
    TlogError,
    Tree,
    UnknownVerifierError,
    UnverifiedNoteError,
    Verifier,
    VerifierList,
    check_hash,
    check_record,
    check_tree,
    check_trees,
    consistency_tiles,
    format_data_tile,
    format_hash,
    format_record,
    format_tree,
    generate_key,
    gosum_lines,
    hash_from_tile,
    lookup_path,
    new_tiles,
    node_hash,
    open_note,
    parse_lookup,
    parse_record,
    parse_tile_path,
    parse_tree,
    prove_record,
    prove_tree,
    read_tile_data,
    record_hash,
    record_tiles,
    sign_note,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tile_for_index,
    tree_hash,
    verify_record,
)

VECTORS_FILE = "sumdb_note_tlog_vectors.txt"
TEST_DB = "localhost.localdev/sumdb"
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def go_bytes(literal: str) -> bytes:
    """A Go/Python string literal body (``\\n``, ``\\x01``, ``\\xff``) as bytes."""
    decoded: bytes = codecs.escape_decode(literal.encode("utf-8"))[0]
    return decoded


# ================================================================== loading the vector file


@dataclass(frozen=True)
class Vectors:
    """Everything the vector file states, parsed."""

    sections: dict[int, str]
    verifiers: dict[str, str]
    signers: dict[str, str]
    bad_keys: list[tuple[str, str]]
    note_text: str
    sig_lines: dict[str, str]
    lines: dict[str, str]  # single-line statements of section 3, by their leading call
    tile_paths: list[tuple[str, Tile | None]]
    new_tiles: list[tuple[int, int, int, int]]
    records: list[bytes]
    fork_a: list[bytes]
    fork_b: list[bytes]
    fork_trees: dict[str, tuple[int, str, str]]
    misbehavior: list[str]
    client_errors: list[str]
    gonosumdb: tuple[str, list[str], list[str]]
    derived_trees: list[str]
    derived_note: bytes
    derived_lookup: tuple[str, bytes]
    derived_tiles: dict[str, bytes]

    @property
    def count(self) -> int:
        """How many separate vectors the file holds (each one is checked below)."""
        return (
            len(self.verifiers)
            + len(self.signers)
            + len(self.bad_keys)
            + len(self.sig_lines)
            + len(self.lines)
            + len(self.tile_paths)
            + len(self.new_tiles)
            + len(self.records)
            + len(self.fork_a)
            + len(self.fork_b)
            + len(self.fork_trees)
            + len(self.misbehavior)
            + len(self.client_errors)
            + len(self.gonosumdb[1])
            + len(self.gonosumdb[2])
            + len(self.derived_trees)
            + 2
            + len(self.derived_tiles)
        )


def _split_sections(text: str) -> dict[int, str]:
    sections: dict[int, str] = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        number = int(block.split(".", 1)[0])
        sections[number] = block
    assert sorted(sections) == [1, 2, 3, 4, 5], f"sections found: {sorted(sections)}"
    return sections


def _parse_keys(section: str) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]]]:
    verifiers: dict[str, str] = {}
    signers: dict[str, str] = {}
    for kind, key in re.findall(r"^(verifier|signer)\s+(\S+)", section, flags=re.M):
        if kind == "verifier":
            verifiers[key.split("+", 1)[0]] = key
        else:
            signers[key.split("+")[2]] = key
    bad = re.findall(r"^\s+(PeterNeumann\+\S+)\s+\((.*)\)\s*$", section, flags=re.M)
    assert len(verifiers) == 4 and len(signers) == 3 and len(bad) == 2
    return verifiers, signers, bad


def _parse_note(section: str) -> tuple[str, dict[str, str]]:
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("text (2 lines"))
    end = next(i for i, line in enumerate(lines) if line.startswith("signed message"))
    text = "".join(line + "\n" for line in lines[start + 1 : end])
    sigs = {line.split(" ")[1]: line + "\n" for line in lines if line.startswith("— ")}
    assert text.count("\n") == 2 and sorted(sigs) == ["EnochRoot", "PeterNeumann"]
    return text, sigs


Section3 = tuple[dict[str, str], list[tuple[str, Tile | None]], list[tuple[int, int, int, int]]]


def _parse_section3(section: str) -> Section3:
    lines: dict[str, str] = {}
    for line in section.splitlines():
        for call in ("RecordHash(data)", 'RecordHash("hello world")', "FormatTree", "ParseTree"):
            if line.startswith(call):
                lines[call] = line
        for call in ("FormatRecord", "ParseRecord"):
            if line.startswith(call):
                lines[call] = line
        if line.strip().startswith("rejects") and "ParseRecord" in lines:
            lines["ParseRecord rejects"] = line
    assert len(lines) == 7, sorted(lines)
    paths: list[tuple[str, Tile | None]] = []
    for path, spec in re.findall(r"^\s+(tile/\S+)\s+(\{[-\d,]+\}|INVALID)", section, flags=re.M):
        paths.append(
            (path, None if spec == "INVALID" else Tile(*ast.literal_eval(f"({spec[1:-1]})")))
        )
    height = int(_must(r"NewTiles\(h=(\d+)", section).group(1))
    counts = [
        (height, int(a), int(b), int(c))
        for a, b, c in re.findall(r"\((\d+),(\d+)\)->(\d+)", section)
    ]
    assert len(paths) == 8 and len(counts) == 7
    return lines, paths, counts


def _record_text(spec: str) -> bytes:
    spec = re.sub(r"\s{2,}\(.*\)\s*$", "", spec.strip())
    parts = spec.split(" / ")
    head = " ".join(parts[0].split(" ")[:2])
    return "".join(p.replace("…", head, 1) + "\n" for p in parts).encode()


@dataclass(frozen=True)
class _Section4:
    records: list[bytes]
    fork_a: list[bytes]
    fork_b: list[bytes]
    fork_trees: dict[str, tuple[int, str, str]]
    misbehavior: list[str]
    client_errors: list[str]
    gonosumdb: tuple[str, list[str], list[str]]


@dataclass(frozen=True)
class _Section5:
    derived_trees: list[str]
    derived_note: bytes
    derived_lookup: tuple[str, bytes]
    derived_tiles: dict[str, bytes]


def _must(pattern: str, text: str) -> re.Match[str]:
    m = re.search(pattern, text, flags=re.M)
    assert m is not None, f"vector file: no match for {pattern!r}"
    return m


def _parse_section4(section: str) -> _Section4:
    records = [_record_text(s) for _, s in re.findall(r"^\s+(\d): (.*)$", section, flags=re.M)]
    forks = {
        name: [go_bytes(q) for q in QUOTED.findall(rest)]
        for name, rest in re.findall(r"^fork ([AB]) adds (.*)$", section, flags=re.M)
    }
    trees = {
        name: (int(n), h, sig)
        for name, n, h, sig in re.findall(
            r"^fork ([AB]) tree (\d+) hash (\S+)\n\s+signed: (— .*)$", section, flags=re.M
        )
    }
    after = section.split('"proof of misbehavior"', 1)[1].split("Expected client", 1)[0]
    proof = re.findall(r"^\s+([A-Za-z0-9+/]{43}=)\s*$", after, flags=re.M)
    errors_part = section.split("TestClientBadTiles):", 1)[1].split("GONOSUMDB", 1)[0]
    client_errors = QUOTED.findall(errors_part)
    nosum = _must(r'GONOSUMDB="([^"]+)" skips (.*) but not (.*)\.', section)
    skip, ok = (s.split(", ") for s in nosum.group(2, 3))
    assert len(records) == 4 and sorted(forks) == ["A", "B"] and sorted(trees) == ["A", "B"]
    assert len(proof) == 4 and len(client_errors) == 2
    gonosumdb = (nosum.group(1), skip, ok)
    return _Section4(records, forks["A"], forks["B"], trees, proof, client_errors, gonosumdb)


def _block_after(lines: list[str], start: int) -> bytes:
    """Lines from ``start`` through the first signature line, as a newline-ended block."""
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("— "))
    return "".join(line + "\n" for line in lines[start : end + 1]).encode()


def _parse_section5(section: str) -> _Section5:
    lines = section.splitlines()
    trees = re.findall(r"^tree (\d): (\S+)$", section, flags=re.M)
    note_at = lines.index("go.sum database tree")
    lookup_at = next(i for i, line in enumerate(lines) if line.startswith("lookup body for"))
    lookup_key = _must(r"lookup body for (\S+) ", lines[lookup_at]).group(1)
    tiles: dict[str, bytes] = {}
    for path, value in re.findall(r"^(tile/\S+) = (.*)$", section, flags=re.M):
        tiles[path] = ast.literal_eval(value) if value.startswith("b'") else bytes.fromhex(value)
    assert [int(n) for n, _ in trees] == [1, 2, 3, 4] and len(tiles) == 3
    lookup = (lookup_key, _block_after(lines, lookup_at + 1))
    return _Section5([h for _, h in trees], _block_after(lines, note_at), lookup, tiles)


@functools.cache
def load_vectors(path: Path) -> Vectors:
    """Parse the vector file (cached per path; the file is read-only data)."""
    sections = _split_sections(path.read_text(encoding="utf-8"))
    verifiers, signers, bad = _parse_keys(sections[1])
    note_text, sig_lines = _parse_note(sections[2])
    lines, paths, counts = _parse_section3(sections[3])
    s4, s5 = _parse_section4(sections[4]), _parse_section5(sections[5])
    return Vectors(
        sections=sections,
        verifiers=verifiers,
        signers=signers,
        bad_keys=bad,
        note_text=note_text,
        sig_lines=sig_lines,
        lines=lines,
        tile_paths=paths,
        new_tiles=counts,
        records=s4.records,
        fork_a=s4.fork_a,
        fork_b=s4.fork_b,
        fork_trees=s4.fork_trees,
        misbehavior=s4.misbehavior,
        client_errors=s4.client_errors,
        gonosumdb=s4.gonosumdb,
        derived_trees=s5.derived_trees,
        derived_note=s5.derived_note,
        derived_lookup=s5.derived_lookup,
        derived_tiles=s5.derived_tiles,
    )


@pytest.fixture
def vec() -> Vectors:
    return load_vectors(conformance_file(VECTORS_FILE))


def test_the_vector_file_is_complete(vec: Vectors) -> None:
    assert vec.count == 67  # every one of them is checked by a test below


# ==================================================================== section 1: keys


def test_every_key_parses_and_signers_match_their_verifiers(vec: Vectors) -> None:
    for name, vkey in vec.verifiers.items():
        v = Verifier.parse(vkey)
        assert (v.name, v.vkey) == (name, vkey)
        key = b"\x01" + v.public_key
        digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
        assert v.key_hash == int(vkey.split("+")[1], 16) == int.from_bytes(digest[:4], "big")
    for name, skey in vec.signers.items():
        s = Signer.parse(skey)
        assert (s.name, s.skey, s.verifier.vkey) == (name, skey, vec.verifiers[name])
    assert "sum.golang.org" in vec.verifiers and "sum.golang.org" not in vec.signers


def test_the_go_test_database_keys_are_in_the_vectors(vec: Vectors) -> None:
    assert (vec.verifiers[TEST_DB], vec.signers[TEST_DB]) == (GO_TEST_VKEY, GO_TEST_SKEY)
    assert "+" in GO_TEST_VKEY.split("+", 2)[2]  # '+' inside the base64


def test_enoch_root_signer_is_the_zero_seed(vec: Vectors) -> None:
    assert Signer.parse(vec.signers["EnochRoot"]).seed == bytes(32)
    skey, vkey = generate_key("EnochRoot", lambda n: bytes(n))
    assert (skey, vkey) == (vec.signers["EnochRoot"], vec.verifiers["EnochRoot"])


def _manglings(key: str) -> list[str]:
    """Every proper substring and every single-byte +1 mutation (TestNewVerifier)."""
    subs = [key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)]
    subs.remove(key)
    muts = [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return subs + muts


def test_mangled_verifier_keys_are_rejected(vec: Vectors) -> None:
    mangled = _manglings(vec.verifiers["PeterNeumann"])
    assert len(mangled) == 66 * 67 // 2 - 1 + 66
    for bad in mangled:
        with pytest.raises(KeyFormatError):
            Verifier.parse(bad)
    messages = {"wrong key length, adjusted hash": "malformed verifier id"}
    messages["unknown algorithm byte, adjusted hash"] = "unknown verifier algorithm"
    for bad, why in vec.bad_keys:
        with pytest.raises(KeyFormatError, match=f"^{messages[why]}$"):
            Verifier.parse(bad)


def test_mangled_signer_keys_are_rejected(vec: Vectors) -> None:
    for bad in _manglings(vec.signers["PeterNeumann"]):
        with pytest.raises(KeyFormatError):
            Signer.parse(bad)


def test_key_parsing_is_as_strict_as_go() -> None:
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    for bad in (
        vkey.replace("c74f20a3", "+c74f20a"),  # a sign is not hex
        vkey.replace("c74f20a3", "c74f_0a3"),
        vkey.replace("ARpc", "AR pc"),
        vkey.replace("PeterNeumann", "Peter\u00a0Neumann"),  # a Unicode space in the name
        vkey[:-2] + "T=",  # padding where none belongs
    ):
        with pytest.raises(KeyFormatError):
            Verifier.parse(bad)
    assert Verifier.parse(vkey.replace("c74f20a3", "C74F20A3")).key_hash == 0xC74F20A3


# ============================================================== section 2: signed notes


KeyPair = tuple[Signer, Verifier]


@pytest.fixture
def peter(vec: Vectors) -> KeyPair:
    return Signer.parse(vec.signers["PeterNeumann"]), Verifier.parse(vec.verifiers["PeterNeumann"])


@pytest.fixture
def enoch(vec: Vectors) -> KeyPair:
    return Signer.parse(vec.signers["EnochRoot"]), Verifier.parse(vec.verifiers["EnochRoot"])


def _sig(line: str) -> Signature:
    """The Signature a ``— name base64`` line stands for."""
    _, name, b64 = line.rstrip("\n").split(" ")
    return Signature(name, int.from_bytes(base64.b64decode(b64)[:4], "big"), b64)


def test_signing_reproduces_the_go_signatures(vec: Vectors, peter: KeyPair, enoch: KeyPair) -> None:
    text, sigs = vec.note_text, vec.sig_lines
    assert sign_note(text, peter[0]) == (text + "\n" + sigs["PeterNeumann"]).encode()
    assert sign_note(text, enoch[0]) == (text + "\n" + sigs["EnochRoot"]).encode()
    both = (text + "\n" + sigs["PeterNeumann"] + sigs["EnochRoot"]).encode()
    assert sign_note(text, peter[0], enoch[0]) == both
    stale = Note(text, sigs=(Signature("PeterNeumann", 0xC74F20A3, "BADSIGN="),))
    assert sign_note(stale, peter[0]) == (text + "\n" + sigs["PeterNeumann"]).encode()
    kept = Note(text, unverified_sigs=(_sig(sigs["EnochRoot"]),))
    assert (
        sign_note(kept, peter[0])
        == (text + "\n" + sigs["EnochRoot"] + sigs["PeterNeumann"]).encode()
    )


def test_signing_refuses_what_go_refuses(vec: Vectors, peter: KeyPair) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note("abc", peter[0])
    with pytest.raises(MalformedNoteError):
        sign_note(Note(vec.note_text, sigs=(Signature("a+b", 0, "ABCD"),)))
    with pytest.raises(MalformedNoteError):
        sign_note(Note(vec.note_text, sigs=(Signature("PeterNeumann", 0xC74F20A3, "BADHASH="),)))
    with pytest.raises(InvalidSignerError, match=r"^invalid signer$"):
        sign_note(vec.note_text, replace(peter[0], name="bad name"))


def test_open_verifies_known_and_keeps_unknown_signatures(
    vec: Vectors, peter: KeyPair, enoch: KeyPair
) -> None:
    text, sigs = vec.note_text, vec.sig_lines
    msg = (text + "\n" + sigs["PeterNeumann"] + sigs["EnochRoot"]).encode()
    p, e = _sig(sigs["PeterNeumann"]), _sig(sigs["EnochRoot"])
    assert open_note(msg, [peter[1]]) == Note(text, (p,), (e,))
    assert open_note(msg, [peter[1], enoch[1]]) == Note(text, (p, e), ())
    with pytest.raises(UnverifiedNoteError, match=r"^note has no verifiable signatures$") as err:
        open_note(msg, [])
    assert err.value.note == Note(text, (), (p, e))
    with pytest.raises(AmbiguousVerifierError, match=r"^ambiguous key EnochRoot\+af0cfe78$"):
        open_note((text + "\n" + sigs["EnochRoot"]).encode(), [enoch[1], peter[1], enoch[1]])
    single = (text + "\n" + sigs["PeterNeumann"]).encode()
    assert open_note(single, VerifierList([enoch[1], peter[1], enoch[1]])).sigs == (p,)


def test_open_refuses_malformed_and_forged_notes(vec: Vectors, peter: KeyPair) -> None:
    text, psig = vec.note_text, vec.sig_lines["PeterNeumann"]
    bad_name = "— Bad Name " + psig.split(" ")[2].rstrip("\n")
    malformed = [
        text,
        text + "\n",
        text + "\n" + psig[:-1],
        "\x01" + text + "\n" + psig,
        text + "\n" + bad_name,
        text + "\n" + psig + "Unexpected line.\n",
        text + "\n" + psig * 101,
    ]
    for msg in [m.encode() for m in malformed] + [b"\xff" + (text + "\n" + psig).encode()]:
        with pytest.raises(MalformedNoteError, match=r"^malformed note$"):
            open_note(msg, [peter[1]])
    with pytest.raises(MalformedNoteError):
        open_note((text + "\n" + psig * 101).encode(), [])
    forged = (text + "\n").encode() + psig.encode()[:60] + b"ABCD" + psig.encode()[60:]
    with pytest.raises(
        InvalidSignatureError, match=r"^invalid signature for key PeterNeumann\+c74f20a3$"
    ):
        open_note(forged, [peter[1]])


def test_open_drops_repeated_signatures(vec: Vectors, peter: KeyPair) -> None:
    text, sigs = vec.note_text, vec.sig_lines
    psig, esig = sigs["PeterNeumann"], sigs["EnochRoot"]
    abcd = (esig.encode()[:60] + b"ABCD" + esig.encode()[60:]).decode()  # Go slices bytes
    n = open_note((text + "\n" + psig + psig + esig + esig + abcd).encode(), [peter[1]])
    assert n.sigs == (_sig(psig),)
    assert n.unverified_sigs == (_sig(esig), _sig(abcd))


def test_verifier_list_errors_name_the_key(vec: Vectors, peter: KeyPair) -> None:
    vs = VerifierList([peter[1]])
    assert vs.verifier("PeterNeumann", 0xC74F20A3) == peter[1]
    with pytest.raises(UnknownVerifierError, match=r"^unknown key PeterNeumann\+c74f20a4$"):
        vs.verifier("PeterNeumann", 0xC74F20A4)
    # The vector file quotes "unknown key PeterNeumann+c74f20a3" for the name PeterNeuman;
    # Go's message (note_test.go TestVerifierList) names the key that was asked for.
    assert '"unknown key PeterNeumann+c74f20a3" for name PeterNeuman' in vec.sections[2]
    with pytest.raises(UnknownVerifierError, match=r"^unknown key PeterNeuman\+c74f20a3$"):
        vs.verifier("PeterNeuman", 0xC74F20A3)


def test_error_strings_quoted_in_the_file_are_ours(vec: Vectors) -> None:
    ours = {
        "malformed note": MalformedNoteError(),
        "note has no verifiable signatures": UnverifiedNoteError(Note("x\n")),
        "invalid signature for key PeterNeumann+c74f20a3": InvalidSignatureError(
            "PeterNeumann", 0xC74F20A3
        ),
        "ambiguous key EnochRoot+af0cfe78": AmbiguousVerifierError("EnochRoot", 0xAF0CFE78),
        "unknown key PeterNeumann+c74f20a4": UnknownVerifierError("PeterNeumann", 0xC74F20A4),
    }
    for message, error in ours.items():
        assert f'"{message}"' in vec.sections[2]
        assert str(error) == message


# ===================================================================== section 3: formats


def test_record_and_node_hashes(vec: Vectors) -> None:
    hello = vec.lines['RecordHash("hello world")'].split(" = ")[1]
    assert format_hash(record_hash(b"hello world")) == hello
    definitions = vec.lines["RecordHash(data)"]
    assert "SHA-256(0x00 || data)" in definitions and "SHA-256(0x01 || l || r)" in definitions
    left, right = record_hash(b"l"), record_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert record_hash(b"") == hashlib.sha256(b"\x00").digest()


def test_tree_hash_of_the_empty_tree_is_all_zeros_as_in_go(vec: Vectors) -> None:
    # The file says TreeHash(0) = SHA-256("") = 47DEQ...; Go's tlog.TreeHash documents and
    # returns an all-zero Hash for n == 0 (the client's initial Tree{} relies on it).
    claimed = vec.lines["RecordHash(data)"].rsplit(" = ", 1)[1]
    assert format_hash(hashlib.sha256(b"").digest()) == claimed
    assert tree_hash(0, lambda idx: pytest.fail("TreeHash(0) reads nothing")) == bytes(32)


def test_format_and_parse_tree(vec: Vectors) -> None:
    m = re.match(
        r'FormatTree\(N=(\d+), RecordHash\("([^"]*)"\)\) = "(.*)"$', vec.lines["FormatTree"]
    )
    assert m is not None
    tree = Tree(int(m[1]), record_hash(m[2].encode()))
    good = go_bytes(m[3])
    assert format_tree(tree) == good
    assert parse_tree(good) == tree == parse_tree(good.decode())
    assert parse_tree(good + b"extra line\nmore\n") == tree  # "Trailing junk ... ignored"
    rejects = vec.lines["ParseTree"]
    assert '"not-"+above' in rejects and "0xabcdef" in rejects and "BTOOBIG=" in rejects
    hash64 = format_hash(tree.hash)
    for bad in (
        b"not-" + good,
        good.replace(m[1].encode(), b"0xabcdef"),
        good.replace(hash64.encode(), (hash64[: -len("b0=")] + "TOOBIG=").encode()),
        good[:-1],
        good.replace(m[1].encode(), b"0" + m[1].encode()),
        good.replace(m[1].encode(), b"-1"),
    ):
        with pytest.raises(MalformedTreeError, match=r"^malformed tree note$"):
            parse_tree(bad)


def test_format_record(vec: Vectors) -> None:
    line = vec.lines["FormatRecord"]
    m = re.match(r"FormatRecord\((\d+), " + QUOTED.pattern + r"\) = " + QUOTED.pattern, line)
    assert m is not None
    assert format_record(int(m[1]), go_bytes(m[2])) == go_bytes(m[3])
    rejects = [go_bytes(q) for q in QUOTED.findall(line.split("rejects text", 1)[1])]
    assert len(rejects) == 4
    for bad in rejects:
        with pytest.raises(MalformedRecordError, match=r"^malformed record data$"):
            format_record(1, bad)


def test_parse_record(vec: Vectors) -> None:
    line = vec.lines["ParseRecord"]
    m = re.match(
        r"ParseRecord\("
        + QUOTED.pattern
        + r"\) = \((\d+), "
        + QUOTED.pattern
        + ", rest="
        + QUOTED.pattern,
        line,
    )
    assert m is not None
    good = go_bytes(m[1])
    assert parse_record(good) == (int(m[2]), go_bytes(m[3]), go_bytes(m[4]))
    rejects = QUOTED.findall(vec.lines["ParseRecord rejects"])
    assert rejects[0] == "not-…"  # the file abbreviates "not-" + the good message
    bad_inputs = [b"not-" + good] + [go_bytes(q) for q in rejects[1:]]
    assert len(bad_inputs) == 5
    for bad in bad_inputs:
        with pytest.raises(MalformedRecordError):
            parse_record(bad)
    assert parse_record(b"+12\na\n\n") == (12, b"a\n", b"")  # strconv.ParseInt takes a sign


def test_tile_paths(vec: Vectors) -> None:
    for path, tile in vec.tile_paths:
        if tile is None:
            with pytest.raises(BadTilePathError, match=r"^malformed tile path"):
                parse_tile_path(path)
            continue
        assert tile.path() == path
        assert parse_tile_path(path) == tile


def test_tile_paths_reject_non_canonical_forms() -> None:
    for bad in (
        "tile/4/0/01",
        "tile/4/0/+001",
        "tile/+4/0/001",
        "tile/4/0/001.p/16",
        "tile/4/0/001.p/0",
        "tile/4/0/x000/001",
        "tile/31/0/000",
        "tile/0/0/000",
        "tile/4/0/٣٣٣",
        "tiles/4/0/001",
        "tile/4/0",
        "tile/4/0/.p/3",
    ):
        with pytest.raises(BadTilePathError):
            parse_tile_path(bad)


def test_new_tiles_counts(vec: Vectors) -> None:
    for height, old, new, count in vec.new_tiles:
        assert len(new_tiles(height, old, new)) == count, (old, new)
    assert "Go client default tile height = 8" in vec.sections[3]
    assert DEFAULT_TILE_HEIGHT == TileHashReader(Tree(0, bytes(32))).height == 8


# ========================================================== tlog structure (ported tests)


class MemLog:
    """An in-memory log: records' stored hashes, as a Go server keeps them."""

    def __init__(self, records: Sequence[bytes] = ()) -> None:
        self.hashes: list[bytes] = []
        self.n = 0
        for r in records:
            self.add(r)

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.hashes[i] for i in indexes]

    def add(self, data: bytes) -> None:
        self.hashes += stored_hashes(self.n, data, self.read)
        self.n += 1

    def tree(self, n: int | None = None) -> Tree:
        size = self.n if n is None else n
        return Tree(size, tree_hash(size, self.read))

    def tiles(self, height: int, n: int | None = None) -> dict[Tile, bytes]:
        size = self.n if n is None else n
        return {t: read_tile_data(t, self.read) for t in new_tiles(height, 0, size)}


def test_split_stored_hash_index_inverts_stored_hash_index() -> None:
    for level in range(10):
        for n in range(100):
            assert split_stored_hash_index(stored_hash_index(level, n)) == (level, n)


def test_tree_proofs_and_tiles_over_a_growing_log() -> None:
    """Port of tlog_test.go TestTree (height 2, 48 records)."""
    log = MemLog()
    trees: list[bytes] = []
    leaves: list[bytes] = []
    tiles: dict[Tile, bytes] = {}
    for i in range(48):
        data = f"leaf {i}".encode()
        old_len = len(log.hashes)
        log.add(data)
        leaves.append(record_hash(data))
        assert stored_hash_count(i + 1) == len(log.hashes)
        th = tree_hash(i + 1, log.read)
        trees.append(th)
        for tile in new_tiles(2, i, i + 1):
            older = replace(tile, W=tile.W - 1)
            new = read_tile_data(tile, log.read)
            assert tiles.get(older, b"") == new[: len(tiles.get(older, b""))]
            tiles[tile] = new
        for j in range(old_len, len(log.hashes)):
            tile = tile_for_index(2, j)
            assert hash_from_tile(tile, tiles[tile], j) == log.hashes[j]
        _check_record_proofs(log, i + 1, th, leaves)
        _check_tile_reader(log, i + 1, th, leaves, trees)


def _check_record_proofs(log: MemLog, t: int, th: bytes, leaves: list[bytes]) -> None:
    for j in range(t):
        proof = prove_record(t, j, log.read)
        check_record(proof, t, th, j, leaves[j])
        for k in range(len(proof)):
            corrupt = list(proof)
            corrupt[k] = bytes([corrupt[k][0] ^ 1]) + corrupt[k][1:]
            with pytest.raises(ProofError):
                check_record(corrupt, t, th, j, leaves[j])


def _check_tile_reader(
    log: MemLog, t: int, th: bytes, leaves: list[bytes], trees: list[bytes]
) -> None:
    reader = TileHashReader(Tree(t, th), height=2)
    tiles = log.tiles(2)

    def read(indexes: Sequence[int]) -> list[bytes]:
        return reader.read_hashes(tiles, indexes)

    for j in range(t):
        assert read([stored_hash_index(0, j)]) == [leaves[j]]
        check_record(prove_record(t, j, read), t, th, j, leaves[j])
    with pytest.raises(TlogError, match="indexes not in tree"):
        read([t * 2])
    for j in range(1, t + 1):
        assert tree_hash(j, read) == trees[j - 1]
        proof = prove_tree(t, j, read)
        check_tree(proof, t, th, j, trees[j - 1])
        for k in range(len(proof)):
            corrupt = list(proof)
            corrupt[k] = bytes([corrupt[k][0] ^ 1]) + corrupt[k][1:]
            with pytest.raises(ProofError):
                check_tree(corrupt, t, th, j, trees[j - 1])


def test_tile_hash_reader_detects_any_tampered_hash() -> None:
    """Port of tile_test.go TestTileHashReader: zero one stored hash, every read must fail."""
    log = MemLog()
    for size in range(1, 41):
        log.add(f"leaf {size - 1}".encode())
        reader, tiles = TileHashReader(log.tree(), height=2), log.tiles(2)
        every = list(range(stored_hash_index(0, size)))
        assert reader.read_hashes(tiles, every) == log.hashes[: len(every)]
        for i in every:
            assert reader.read_hashes(tiles, [i]) == [log.hashes[i]]
            zeroed = _zero_index(tiles, 2, i)
            with pytest.raises(InconsistentTileError):
                reader.read_hashes(zeroed, [i])
            with pytest.raises(InconsistentTileError):
                reader.read_hashes(zeroed, every)


def _zero_index(tiles: dict[Tile, bytes], height: int, index: int) -> dict[Tile, bytes]:
    """The tiles with the bottom-row hashes behind ``index`` zeroed (tile_test.go zeroIndex)."""
    t = tile_for_index(height, index)
    level, n = split_stored_hash_index(index)
    start = ((n << (level - t.L * height)) - (t.N << height)) * 32
    end = start + (32 << (level - t.L * height))
    out = dict(tiles)
    for tile, data in tiles.items():
        if (tile.H, tile.L, tile.N) == (t.H, t.L, t.N) and end <= len(data):
            out[tile] = data[:start] + bytes(end - start) + data[end:]
    return out


def test_tile_hash_reader_names_missing_and_short_tiles() -> None:
    log = MemLog([f"r{i}".encode() for i in range(300)])
    tree = log.tree()
    reader = TileHashReader(tree)  # height 8, as the go command
    needed = reader.hashes_for([stored_hash_index(0, 5)])
    assert [t.path() for t in needed] == ["tile/8/1/000.p/1", "tile/8/0/001.p/44", "tile/8/0/000"]
    tiles = log.tiles(8)
    with pytest.raises(MissingTileError, match="tile/8/0/000"):
        reader.read_hashes({t: tiles[t] for t in needed[:2]}, [stored_hash_index(0, 5)])
    short = {**tiles, needed[2]: tiles[needed[2]][:-32]}
    with pytest.raises(TlogError, match="bad result slice"):
        reader.read_hashes(short, [stored_hash_index(0, 5)])


def test_a_full_tile_can_stand_in_for_a_partial_one() -> None:
    log = MemLog([f"r{i}".encode() for i in range(10)])
    old = log.tree(6)
    full = read_tile_data(Tile(2, 0, 1, 4), log.read)
    tiles = {**log.tiles(2, 6), Tile(2, 0, 1, 4): full}
    del tiles[Tile(2, 0, 1, 2)]
    verify_record(old, 5, b"r5", tiles, height=2)


# ====================================================== section 4: the fork scenario


@pytest.fixture
def signer(vec: Vectors) -> Signer:
    return Signer.parse(vec.signers[TEST_DB])


def _signed(tree: Tree, signer: Signer) -> bytes:
    return sign_note(format_tree(tree).decode(), signer)


def test_fork_trees_are_signed_exactly_as_go_signs_them(vec: Vectors, signer: Signer) -> None:
    for name, extra in (("A", vec.fork_a), ("B", vec.fork_b)):
        n, h, sig_line = vec.fork_trees[name]
        log = MemLog(vec.records + extra)
        tree = log.tree(n)
        assert format_hash(tree.hash) == h
        note = _signed(tree, signer)
        assert note == format_tree(tree) + b"\n" + sig_line.encode() + b"\n"
        assert parse_tree(open_note(note, [signer.verifier]).text) == tree


def test_the_fork_is_proven_like_the_go_client_proves_it(vec: Vectors, signer: Signer) -> None:
    a, b = MemLog(vec.records + vec.fork_a), MemLog(vec.records + vec.fork_b)
    old, new = a.tree(5), b.tree(6)
    in_new = tree_hash(5, b.read)
    proof = prove_tree(6, 5, b.read)
    assert [format_hash(h) for h in [in_new, *proof]] == vec.misbehavior
    check_tree(proof, 6, new.hash, 5, in_new)
    with pytest.raises(ProofError):  # the consistency check that must fail
        check_tree(proof, 6, new.hash, 5, old.hash)
    old_note, new_note = _signed(old, signer), _signed(new, signer)
    with pytest.raises(ForkError) as fork:
        check_trees(old, old_note, new, new_note, b.tiles(2), height=2)
    assert fork.value.report == _go_fork_report(old_note, new_note, vec.misbehavior)
    for want in (
        "SECURITY ERROR",
        "go.sum database server misbehavior detected!",
        "old database:\n\tgo.sum database tree\n\t5\n",
        "— localhost.localdev/sumdb AAAMZ5/2FVAd",
        "new database:\n\tgo.sum database tree\n\t6\n",
        "— localhost.localdev/sumdb AAAMZ6oRNswl",
        "proof of misbehavior:\n\tT7i+H/8ER4nXOiw4Bj0k",
    ):  # sumdb/client_test.go TestClientFork
        assert want in fork.value.report


def _go_fork_report(old_note: bytes, new_note: bytes, proof: list[str]) -> str:
    def indent(note: bytes) -> str:
        return note.decode().replace("\n", "\n\t")

    return (
        "SECURITY ERROR\ngo.sum database server misbehavior detected!\n\n"
        f"old database:\n\t{indent(old_note)}\nnew database:\n\t{indent(new_note)}\n"
        "proof of misbehavior:" + "".join(f"\n\t{h}" for h in proof)
    )


def test_bad_tiles_give_the_go_client_errors(vec: Vectors, signer: Signer) -> None:
    log = MemLog(vec.records)
    flipped = {t: bytes(x ^ 0x80 for x in d) for t, d in log.tiles(2).items()}
    tree1, tree3, tree4 = log.tree(1), log.tree(3), log.tree(4)
    first, later = vec.client_errors
    with pytest.raises(SumDBError) as err:
        check_trees(tree1, b"", tree1, b"", flipped, height=2)
    assert first.endswith(": " + str(err.value)) and "initializing sumdb.Client" in first
    with pytest.raises(SumDBError) as err:
        check_trees(tree3, b"", tree4, b"", flipped, height=2)
    assert later.endswith(": " + str(err.value))
    check_trees(tree3, b"", tree4, b"", log.tiles(2), height=2)
    check_trees(Tree(0, bytes(32)), b"", tree4, b"", {}, height=2)


def test_gonosumdb_patterns(vec: Vectors) -> None:
    patterns, skip, ok = vec.gonosumdb
    assert all(modpath.match_prefix_patterns(patterns, p) for p in skip)
    assert not any(modpath.match_prefix_patterns(patterns, p) for p in ok)


# ============================================================ section 5: derived goldens


def test_derived_tree_heads_note_and_tiles(vec: Vectors, signer: Signer) -> None:
    log = MemLog(vec.records)
    assert [format_hash(log.tree(n).hash) for n in (1, 2, 3, 4)] == vec.derived_trees
    assert _signed(log.tree(), signer) == vec.derived_note
    tiles = log.tiles(2)
    for path, data in vec.derived_tiles.items():
        tile = parse_tile_path(path)
        if tile.L == -1:
            assert format_data_tile(vec.records) == data  # sum.golang.org layout
        else:
            assert tiles[tile] == data


def test_derived_lookup_body(vec: Vectors, signer: Signer) -> None:
    key, body = vec.derived_lookup
    assert key == "rsc.io/!quote@v1.5.2"
    assert lookup_path("rsc.io/Quote", "v1.5.2/go.mod") == "/lookup/" + key
    lookup = parse_lookup(body)
    assert lookup == (3, vec.records[3], vec.derived_note)
    assert body == format_record(3, vec.records[3]) + vec.derived_note
    tree = parse_tree(open_note(lookup.note, [signer.verifier]).text)
    tiles = MemLog(vec.records).tiles(2)
    assert set(record_tiles(tree, 3, height=2)) <= set(tiles)
    verify_record(tree, lookup.id, lookup.text, tiles, height=2)
    with pytest.raises(RecordAuthError, match="cannot authenticate record data"):
        verify_record(tree, 2, lookup.text, tiles, height=2)
    with pytest.raises(RecordAuthError, match="cannot validate record 4 in tree of size 4"):
        verify_record(tree, 4, lookup.text, tiles, height=2)
    assert gosum_lines(lookup.text, "rsc.io/Quote", "v1.5.2") == ("h1:uppercase!=", None)


# ================================================================= go.sum line handling


def test_gosum_lines_and_check_hash_follow_the_go_command(vec: Vectors) -> None:
    quote = vec.records[0]
    zip_h1 = "h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y="
    mod_h1 = "h1:LzX7hefJvL54yjefDEDHNONDjII0t9xZLPXsUe+TKr0="
    assert gosum_lines(quote, "rsc.io/quote", "v1.5.2") == (zip_h1, mod_h1)
    assert gosum_lines(quote, "rsc.io/quote", "v1.5.3") == (None, None)
    check_hash(quote, "rsc.io/quote", "v1.5.2", zip_h1)
    check_hash(quote, "rsc.io/quote", "v1.5.2/go.mod", mod_h1)
    check_hash(quote, "rsc.io/quote", "v9.9.9", "h1:anything")  # no line: Go accepts
    with pytest.raises(ChecksumMismatchError) as err:
        check_hash(quote, "rsc.io/quote", "v1.5.2", mod_h1)
    assert (err.value.downloaded, err.value.expected) == (mod_h1, zip_h1)


# ===================================================================== the test server


def _go_log_db(vec: Vectors, *, data_tile_ids: bool = True) -> TestSumDB:
    """The Go client test log (records 0..3) in a test DB with the Go test key."""
    db = TestSumDB(signer_key=vec.signers[TEST_DB], data_tile_ids=data_tile_ids)
    for text in vec.records:
        module, version = text.decode().split(" ")[:2]
        db.add_record(module, version, text)
    return db


async def test_server_reproduces_the_derived_vectors(vec: Vectors) -> None:
    key, body = vec.derived_lookup
    async with _go_log_db(vec, data_tile_ids=False) as db, aiohttp.ClientSession() as http:
        assert db.verifier_key == GO_TEST_VKEY
        for path in (f"/lookup/{key}", "/lookup/rsc.io/%21quote@v1.5.2"):
            async with http.get(db.url + path) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/plain; charset=UTF-8"
                assert await resp.read() == body
        async with http.get(db.url + "/latest") as resp:
            assert await resp.read() == vec.derived_note
        for path, data in vec.derived_tiles.items():
            async with http.get(f"{db.url}/{path}") as resp:
                assert resp.status == 200 and await resp.read() == data
                binary = "/data/" not in path
                assert (resp.headers["Content-Type"] == "application/octet-stream") == binary


async def test_server_data_tiles_default_to_x_mod_layout(vec: Vectors) -> None:
    async with _go_log_db(vec) as db, aiohttp.ClientSession() as http:
        async with http.get(db.url + "/tile/2/data/000") as resp:
            assert await resp.read() == format_data_tile(vec.records, 0)
        async with http.get(db.url + "/tile/8/data/000.p/3") as resp:
            assert await resp.read() == format_data_tile(vec.records[:3], 0)


async def test_server_errors_are_server_go_errors(vec: Vectors) -> None:
    cases = {
        "/lookup/rsc.io/quote": (400, "invalid module@version syntax"),
        "/lookup/rsc.io/quote@latest": (400, "invalid module@version syntax"),
        "/lookup/rsc.io/quote@v9.9.9": (404, "not found: rsc.io/quote@v9.9.9"),
        "/lookup/rsc.io/Quote@v1.5.2": (500, ""),  # upper case must be !-escaped
        "/tile/3/5/123/456/078": (400, "invalid tile syntax"),
        "/tile/2/0/001": (404, "not found"),
        "/tile/2/data/001": (404, "not found"),
        "/tile/2/2/000.p/1": (404, "not found"),
        "/somewhere": (404, "404 page not found"),
    }
    async with _go_log_db(vec) as db, aiohttp.ClientSession() as http:
        for path, (status, text) in cases.items():
            async with http.get(db.url + path) as resp:
                assert resp.status == status, path
                assert (await resp.text()).startswith(text), path


async def _fetch_tiles(
    http: aiohttp.ClientSession, base: str, tiles: Sequence[Tile]
) -> dict[Tile, bytes]:
    """Fetch tiles like the go client: the tile as named, else its full version."""
    out: dict[Tile, bytes] = {}
    for tile in tiles:
        for candidate in (tile, replace(tile, W=1 << tile.H)):
            async with http.get(f"{base}/{candidate.path()}") as resp:
                if resp.status == 200:
                    out[candidate] = await resp.read()
                    break
        else:
            raise AssertionError(f"no tile {tile.path()}")
    return out


async def _lookup_verified(
    http: aiohttp.ClientSession, db: TestSumDB, module: str, version: str
) -> tuple[Tree, bytes, tuple[str | None, str | None]]:
    """Lookup, signature, inclusion through tiles: what the go client does, with this core."""
    async with http.get(db.url + lookup_path(module, version)) as resp:
        assert resp.status == 200, await resp.text()
        lookup = parse_lookup(await resp.read())
    tree = parse_tree(open_note(lookup.note, [Verifier.parse(db.verifier_key)]).text)
    tiles = await _fetch_tiles(http, db.url, record_tiles(tree, lookup.id))
    verify_record(tree, lookup.id, lookup.text, tiles)
    return tree, lookup.note, gosum_lines(lookup.text, module, version)


async def test_pure_client_verifies_lookups_against_the_server() -> None:
    db = TestSumDB()
    for i in range(300):  # one full height-8 tile and more
        db.add(f"example.com/m{i}", "v1.0.0", f"h1:zip{i}=", f"h1:mod{i}=")
    async with db, aiohttp.ClientSession() as http:
        for i in (0, 1, 255, 256, 299):
            tree, note, hashes = await _lookup_verified(http, db, f"example.com/m{i}", "v1.0.0")
            assert tree.n == 300 and hashes == (f"h1:zip{i}=", f"h1:mod{i}=")
        db.add("example.com/later", "v1.0.0", "h1:z=", "h1:m=")
        newer, newer_note, _ = await _lookup_verified(http, db, "example.com/later", "v1.0.0")
        tiles = await _fetch_tiles(http, db.url, consistency_tiles(tree, newer))
        check_trees(tree, note, newer, newer_note, tiles)

        db.fork()
        forked, forked_note, hashes = await _lookup_verified(http, db, "example.com/m3", "v1.0.0")
        assert hashes == ("h1:zip3=", "h1:mod3=") and forked.n == newer.n + 1
        tiles = await _fetch_tiles(http, db.url, consistency_tiles(newer, forked))
        with pytest.raises(ForkError, match="SECURITY ERROR"):
            check_trees(newer, newer_note, forked, forked_note, tiles)

        db.tamper_signature = True
        with pytest.raises(InvalidSignatureError):
            await _lookup_verified(http, db, "example.com/m3", "v1.0.0")


def test_server_runs_in_a_thread_and_rejects_bad_records() -> None:
    with TestSumDB(base_path="/db") as db:
        db.add("example.com/a", "v1.0.0", "h1:a=", "h1:b=")
        with pytest.raises(ValueError, match="already has a record"):
            db.add("example.com/a", "v1.0.0", "h1:a=", "h1:b=")
        with pytest.raises(MalformedRecordError):
            db.add_record("example.com/b", "v1.0.0", "no newline")
        with urllib.request.urlopen(db.url + "/latest", timeout=10) as resp:
            note = open_note(resp.read(), [Verifier.parse(db.verifier_key)])
        assert parse_tree(note.text) == db.tree
        assert [r.decoded_path for r in db.requests] == ["/db/latest"]
    with pytest.raises(KeyFormatError):
        TestSumDB(signer_key="PRIVATE+KEY+nope")
    with pytest.raises(ValueError, match="not 'other'"):
        TestSumDB("other", signer_key=GO_TEST_SKEY)


# ============================================================ the real go command (e2e)


def _env(tmp_path: Path, proxy: FixtureProxy, db: TestSumDB) -> dict[str, str]:
    return go_env(
        tmp_path,
        proxy.url,
        gosumdb=db.gosumdb,
        extra={"GONOSUMDB": None, "GONOSUMCHECK": None, "GOPRIVATE": None, "GONOPROXY": None},
    )


def _workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return work


def _latest_file(tmp_path: Path) -> Path:
    return tmp_path / "gopath" / "pkg" / "sumdb" / TEST_DB / "latest"


def _failed(result: CompletedGo) -> str:
    assert result.returncode != 0, f"go succeeded:\n{result.stdout}\n{result.stderr}"
    return result.stderr


@pytest.mark.e2e
async def test_go_command_accepts_modules_the_test_db_vouches_for(tmp_path: Path) -> None:
    x = simple_module("example.com/x", "v1.0.0")
    upper = simple_module("example.com/Upper/Y", "v1.2.0")
    db = TestSumDB(base_path="/sumdb/localhost.localdev/sumdb")
    db.add("example.com/x", "v1.0.0", hash_module(x), hash_mod(x.mod))
    db.add_module(upper)
    args = ["mod", "download", "-json", "example.com/x@v1.0.0", "example.com/Upper/Y@v1.2.0"]
    async with FixtureProxy([x, upper]) as proxy, db:
        done = (await run_go(args, _workdir(tmp_path), _env(tmp_path, proxy, db))).check()
        signed = db.signed_tree()
    sums = {o["Path"]: (o["Sum"], o["GoModSum"]) for o in done.json_objects()}
    assert sums == {m.path: (hash_module(m), hash_mod(m.mod)) for m in (x, upper)}
    base = "/sumdb/localhost.localdev/sumdb"
    lookups = {r.decoded_path for r in db.requests_for("/lookup/")}
    assert lookups == {
        f"{base}/lookup/example.com/x@v1.0.0",
        f"{base}/lookup/example.com/!upper/!y@v1.2.0",
    }
    assert db.requests_for(f"{base}/tile/8/0/000.p/2")
    assert _latest_file(tmp_path).read_bytes() == signed


@pytest.mark.e2e
async def test_go_command_refuses_hashes_the_test_db_contradicts(tmp_path: Path) -> None:
    x = simple_module("example.com/x", "v1.0.0")
    m = simple_module("example.com/m", "v1.0.0")
    absent = simple_module("example.com/absent", "v1.0.0")
    wrong = hash_module(simple_module("example.com/x", "v1.0.1"))
    db = TestSumDB()
    db.add("example.com/x", "v1.0.0", wrong, hash_mod(x.mod))
    db.add("example.com/m", "v1.0.0", hash_module(m), wrong)
    async with FixtureProxy([x, m, absent]) as proxy, db:
        env, work = _env(tmp_path, proxy, db), _workdir(tmp_path)
        bad_zip = _failed(await run_go(["mod", "download", "example.com/x@v1.0.0"], work, env))
        bad_mod = _failed(await run_go(["mod", "download", "example.com/m@v1.0.0"], work, env))
        missing = _failed(await run_go(["mod", "download", "example.com/absent@v1.0.0"], work, env))
    for stderr, noun, downloaded in (
        (bad_zip, "module", hash_module(x)),
        (bad_mod, "go.mod", hash_mod(m.mod)),
    ):
        assert f"verifying {noun}: checksum mismatch" in stderr
        assert f"downloaded: {downloaded}" in stderr
        assert f"{TEST_DB}: {wrong}" in stderr
        assert "SECURITY ERROR" in stderr
    assert "/lookup/example.com/absent@v1.0.0" in missing and "404 Not Found" in missing


@pytest.mark.e2e
def test_go_command_refuses_a_tampered_tree_signature(tmp_path: Path) -> None:
    x = simple_module("example.com/x", "v1.0.0")
    db = TestSumDB()
    db.add_module(x)
    db.tamper_signature = True
    with FixtureProxy([x]) as proxy, db:
        result = run_go_sync(
            ["mod", "download", "example.com/x@v1.0.0"],
            _workdir(tmp_path),
            _env(tmp_path, proxy, db),
        )
    stderr = _failed(result)
    v = Verifier.parse(db.verifier_key)
    assert f"reading tree note: invalid signature for key {v.name}+{v.key_hash:08x}" in stderr


@pytest.mark.e2e
async def test_go_command_detects_a_forked_log(tmp_path: Path) -> None:
    x, y = simple_module("example.com/x", "v1.0.0"), simple_module("example.com/y", "v1.0.0")
    db = TestSumDB()
    db.add_module(x)
    async with FixtureProxy([x, y]) as proxy, db, aiohttp.ClientSession() as http:
        env, work = _env(tmp_path, proxy, db), _workdir(tmp_path)
        (await run_go(["mod", "download", "example.com/x@v1.0.0"], work, env)).check()
        old_note = _latest_file(tmp_path).read_bytes()
        db.fork()
        db.add_module(y)
        result = await run_go(["mod", "download", "example.com/y@v1.0.0"], work, env)
        verifiers = [Verifier.parse(db.verifier_key)]
        old = parse_tree(open_note(old_note, verifiers).text)
        new_note = db.signed_tree()
        new = parse_tree(open_note(new_note, verifiers).text)
        tiles = await _fetch_tiles(http, db.url, consistency_tiles(old, new))
    stderr = _failed(result)
    assert "SECURITY ERROR\ngo.sum database server misbehavior detected!" in stderr
    with pytest.raises(ForkError) as fork:
        check_trees(old, old_note, new, new_note, tiles)
    assert fork.value.report in stderr  # the go command printed the very same report
