"""``router.core.dirhash`` against Go's dirhash vectors, real go.sum lines and the go command.

Vectors come from ``tests/data/conformance/dirhash_vectors.txt`` (the ``h1:`` values below
must equal that file's, so a changed file fails here), and from
``tests/data/conformance/real_gosum_lines.txt`` / ``xmod_gosum_reproduced_from_git.txt``. Zip
hashes of real modules need their sources, which are not here; what is checkable is: every
line of both files is a well-formed go.sum line, the files agree with each other, and the
go.mod hashes whose file content is known (the rsc.io/quote test modules, golang.org/x/text's
synthesized go.mod, three golang.org/x/mod go.mod files) are reproduced. Zips built here are
compared with a straightforward in-memory re-implementation and, end to end, with what the
go command itself computes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import tracemalloc
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.data import read_conformance
from support.gocmd import go_env, run_go
from support.gomod import FixtureModule, module_zip_bytes, simple_module
from support.gomod import hash_zip as support_hash_zip
from support.goproxy_server import Fault, FixtureProxy

from router.core.dirhash import DirHashError, decode_h1, hash1, hash_go_mod, hash_zip_file

EMPTY_H1 = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
HASH1_VECTOR = "h1:EP6WfDoQTSk9klnxcjriWJOGztueJUywHNmWeq+efB8="
ZIP_VECTOR = "h1:rLyfpGMAgqOnGE2aKOY5Xb6cOc0/YQhPjHBHBwkblhs="
ZIP_WITH_DIR_VECTOR = "h1:5mobUXqB9Fl/FZPsMCZ2Td+kHBYl4Vr4yqH6IJuViqk="

# go.mod files whose content is known; each hash must equal the published go.sum line.
KNOWN_GO_MODS = {
    ("rsc.io/quote", "v1.5.2"): b'module "rsc.io/quote"\n\nrequire "rsc.io/sampler" v1.3.0\n',
    ("rsc.io/sampler", "v1.3.0"): (
        b'module "rsc.io/sampler"\n\n'
        b'require "golang.org/x/text" v0.0.0-20170915032832-14c0d48ead0c\n'
    ),
    # no go.mod in that commit: the go command synthesizes one
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"): b"module golang.org/x/text\n",
    ("golang.org/x/mod", "v0.2.0"): (
        b"module golang.org/x/mod\n\ngo 1.12\n\nrequire (\n"
        b"\tgolang.org/x/crypto v0.0.0-20191011191535-87dc89f01550\n"
        b"\tgolang.org/x/tools v0.0.0-20191119224855-298f0cb1881e\n"
        b"\tgolang.org/x/xerrors v0.0.0-20191011141410-1b5146add898\n)\n"
    ),
    ("golang.org/x/mod", "v0.1.1-0.20191105210325-c90efee705ee"): (
        b"module golang.org/x/mod\n\ngo 1.12\n\nrequire (\n"
        b"\tgolang.org/x/crypto v0.0.0-20191011191535-87dc89f01550\n"
        b"\tgolang.org/x/xerrors v0.0.0-20191011141410-1b5146add898\n)\n"
    ),
}


def _gosum_lines(file_name: str) -> list[tuple[str, str, str]]:
    """``(module, version[/go.mod], h1)`` for every non-comment line of a vector file."""
    rows = []
    for line in read_conformance(file_name).splitlines():
        if line.strip() and not line.startswith("#"):
            fields = line.split(" ")
            assert len(fields) == 3, f"{file_name}: not a go.sum line: {line!r}"
            rows.append((fields[0], fields[1], fields[2]))
    return rows


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names on purpose
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def naive_zip_h1(data: bytes) -> str:
    """Straightforward HashZip: whole zip in memory, names as Python decoded them."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [info.filename for info in zf.infolist()]
        content = {info.filename: zf.read(info) for info in zf.infolist()}
    summary = "".join(f"{hashlib.sha256(content[n]).hexdigest()}  {n}\n" for n in sorted(names))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def _h1(data: bytes) -> str:
    return hash_zip_file(io.BytesIO(data))


# ----------------------------------------------------------------------------- Go vectors


def test_hash1_reproduces_go_hash_test_vector() -> None:
    files = [(name, b"data for " + name.encode()) for name in ("xyz", "abc")]
    assert hash1(files) == HASH1_VECTOR


def test_hash1_of_nothing_is_the_hash_of_an_empty_summary() -> None:
    assert hash1([]) == EMPTY_H1


def test_hash1_refuses_names_with_newlines() -> None:
    with pytest.raises(DirHashError, match="filenames with newlines are not supported"):
        hash1([("xyz", b"x"), ("a\nbc", b"y")])


def test_hash_zip_reproduces_go_vector_and_counts_directory_entries() -> None:
    files = [(f"prefix/{n}", b"data for " + n.encode()) for n in ("xyz", "abc")]
    assert _h1(_zip(files)) == ZIP_VECTOR
    assert _h1(_zip(files, zipfile.ZIP_STORED)) == ZIP_VECTOR
    assert _h1(_zip([*files, ("prefix/", b"")])) == ZIP_WITH_DIR_VECTOR


def test_vectors_are_the_ones_in_the_data_file() -> None:
    rows = [
        line.split("\t")
        for line in read_conformance("dirhash_vectors.txt").splitlines()
        if line and not line.startswith("#")
    ]
    recorded = {row[0]: row[1] for row in rows}
    assert recorded == {
        "empty": EMPTY_H1,
        "hash1": HASH1_VECTOR,
        "zip": ZIP_VECTOR,
        "zip_with_dir": ZIP_WITH_DIR_VECTOR,
    }


def test_go_mod_hashes_of_known_go_mod_files_match_published_lines() -> None:
    published = {
        (m, v.removesuffix("/go.mod")): h
        for f in ("real_gosum_lines.txt", "xmod_gosum_reproduced_from_git.txt")
        for m, v, h in _gosum_lines(f)
        if v.endswith("/go.mod")
    }
    for key, content in KNOWN_GO_MODS.items():
        assert hash_go_mod(content) == published[key], key
    # the same content was published for later versions too
    assert published[("golang.org/x/mod", "v0.3.0")] == hash_go_mod(
        KNOWN_GO_MODS[("golang.org/x/mod", "v0.2.0")]
    )


@pytest.mark.parametrize(
    ("file_name", "at_least"),
    [("real_gosum_lines.txt", 126), ("xmod_gosum_reproduced_from_git.txt", 71)],
)
def test_published_gosum_lines_are_well_formed_and_consistent(
    file_name: str, at_least: int
) -> None:
    rows = _gosum_lines(file_name)
    assert len(rows) >= at_least
    seen: dict[tuple[str, str], str] = {}
    for module, version, h in rows:
        assert len(decode_h1(h)) == 32
        assert seen.setdefault((module, version), h) == h, (module, version)


def test_the_two_gosum_files_agree_where_they_overlap() -> None:
    real = {(m, v): h for m, v, h in _gosum_lines("real_gosum_lines.txt")}
    rebuilt = _gosum_lines("xmod_gosum_reproduced_from_git.txt")
    assert all(real.get((m, v), h) == h for m, v, h in rebuilt)
    assert sum((m, v) in real for m, v, _ in rebuilt) >= 60


def test_decode_h1_refuses_malformed_hashes() -> None:
    for bad in ("h2:" + EMPTY_H1[3:], EMPTY_H1[:-1], "h1:" + "!" * 44, EMPTY_H1[:-2] + "V="):
        with pytest.raises(DirHashError):
            decode_h1(bad)


# ------------------------------------------------------------------ behaviour of hash1


def test_hash1_sorts_by_bytes_and_opens_sources_lazily_once() -> None:
    opened: list[str] = []

    def opener(name: str, data: bytes) -> io.BytesIO:
        opened.append(name)
        return io.BytesIO(data)

    names = ["z", "Z", "é", "a/b", "a.b"]
    files = [(n, lambda n=n: opener(n, n.encode() * 3)) for n in names]
    expected = hash1([(n, n.encode() * 3) for n in names])
    assert hash1(files) == expected
    assert opened == sorted(names, key=lambda n: n.encode())


def test_hash1_with_a_repeated_name_uses_its_last_content_twice() -> None:
    repeated = hash1([("a", b"1"), ("a", b"2")])
    assert repeated == hash1([("a", b"2"), ("a", b"2")])
    assert repeated != hash1([("a", b"2")])


def test_hash_go_mod_is_hash1_of_a_file_named_go_mod() -> None:
    mod = b"module example.com/m\n\ngo 1.21\n"
    assert hash_go_mod(mod) == hash1([("go.mod", mod)])


# ------------------------------------------------------------------- behaviour of zips


@st.composite
def _zip_entries(draw: st.DrawFn) -> list[tuple[str, bytes, int]]:
    names = draw(
        st.lists(
            st.text(st.sampled_from("abcXYZ019._-~é☺/"), min_size=1, max_size=12).filter(
                lambda n: not n.startswith("/")
            ),
            min_size=0,
            max_size=8,
            unique=True,
        )
    )
    methods = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    return [(f"m@v1.0.0/{n}", draw(st.binary(max_size=300)), draw(methods)) for n in names]


@settings(max_examples=150, deadline=None)
@given(_zip_entries())
def test_hash_zip_matches_a_naive_reimplementation(entries: list[tuple[str, bytes, int]]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, method in entries:
            zf.writestr(name, b"" if name.endswith("/") else data, compress_type=method)
    data = buf.getvalue()
    assert _h1(data) == naive_zip_h1(data)
    assert hash_zip_file(io.BytesIO(data), prefix_check="m@v1.0.0/") == naive_zip_h1(data)
    plain = [(n, d) for n, d, _ in entries if not n.endswith("/")]
    if len(plain) == len(entries):
        assert _h1(data) == hash1(plain)


def test_hash_zip_of_fixture_modules_matches_the_support_library() -> None:
    for m in (simple_module("example.com/a", "v1.0.0"), simple_module("example.com/B/c", "v0.1.0")):
        data = module_zip_bytes(m)
        assert _h1(data) == support_hash_zip(data) == naive_zip_h1(data)


def test_hash_zip_streams_a_large_entry_through_a_file_object(tmp_path: Path) -> None:
    path = tmp_path / "big.zip"
    blob = random.Random(7).randbytes(1 << 20) * 24  # 24 MiB, stored
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m@v1.0.0/go.mod", b"module m\n")
        zf.writestr("m@v1.0.0/big.bin", blob, compress_type=zipfile.ZIP_STORED)
    want = hash1([("m@v1.0.0/go.mod", b"module m\n"), ("m@v1.0.0/big.bin", blob)])
    del blob
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            got = hash_zip_file(f, prefix_check="m@v1.0.0/")
            assert not f.closed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want
    assert peak < 4 << 20, f"hash_zip_file held {peak} bytes at once"


def test_duplicate_entries_hash_like_go_with_the_last_content() -> None:
    data = _zip([("m@v/a", b"first"), ("m@v/a", b"second")])
    assert _h1(data) == hash1([("m@v/a", b"second"), ("m@v/a", b"second")])


def test_names_are_hashed_as_stored_bytes_even_without_the_utf8_flag() -> None:
    data = bytearray(_zip([("m@v/café", b"x")]))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + flag_offset
        data[at] &= ~0x08  # clear bit 11 (0x800) of the general purpose flags
        data[at + 1] &= ~0x08
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        assert zf.infolist()[0].filename != "m@v/café"  # Python reads it as CP437
    assert _h1(bytes(data)) == hash1([("m@v/café", b"x")])


def test_prefix_check_rejects_entries_outside_the_module() -> None:
    data = _zip([("m@v1.0.0/go.mod", b"module m\n"), ("m@v1.0.0.txt", b"oops")])
    with pytest.raises(
        DirHashError, match=r"zip for m@v1\.0\.0 has unexpected file m@v1\.0\.0\.txt"
    ):
        hash_zip_file(io.BytesIO(data), prefix_check="m@v1.0.0/")
    assert _h1(data) == naive_zip_h1(data)


def test_zips_go_cannot_read_are_errors() -> None:
    good = _zip([("m@v/a.go", b"package a\n" * 50)])
    corrupt = bytearray(good)
    corrupt[corrupt.index(b"PK\x01\x02") - 5] ^= 0xFF  # a byte of compressed data
    bzip = _zip([("m@v/a.go", b"package a\n")], zipfile.ZIP_BZIP2)
    dir_with_data = _zip([("m@v/dir/", b"content")])
    for bad in (b"not a zip", bytes(corrupt), bzip, dir_with_data):
        with pytest.raises(DirHashError):
            _h1(bad)


# -------------------------------------------------------------- the go command agrees


@pytest.fixture
def odd_zip_module() -> Iterator[tuple[FixtureModule, bytes]]:
    m = simple_module("example.com/oddzip", "v1.0.0", extra_files={"sub/x.txt": b"x" * 5000})
    entries = [(m.prefix + "sub/", b"")]
    entries += [(m.prefix + name, data) for name, data in sorted(m.files.items())]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (name, data) in enumerate(entries):
            method = zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED
            zf.writestr(name, data, compress_type=method)
    yield m, buf.getvalue()


@pytest.mark.e2e
async def test_go_command_computes_the_same_h1_for_an_odd_zip(
    tmp_path: Path, odd_zip_module: tuple[FixtureModule, bytes]
) -> None:
    m, data = odd_zip_module
    async with FixtureProxy([m]) as proxy:
        proxy.add_fault(Fault(pattern=r"oddzip/@v/v1\.0\.0\.zip$", body=data))
        env = go_env(tmp_path, proxy.url)
        work = tmp_path / "work"
        work.mkdir()
        done = await run_go(["mod", "download", "-json", "example.com/oddzip@v1.0.0"], work, env)
    report = json.loads(done.check().stdout)
    assert report["Sum"] == _h1(data) == naive_zip_h1(data)
    assert report["Sum"] != hash1([(m.prefix + n, d) for n, d in m.files.items()])
    assert report["GoModSum"] == hash_go_mod(m.mod)
    assert Path(report["Zip"]).with_suffix(".ziphash").read_text() == report["Sum"]
    with open(report["Zip"], "rb") as f:
        assert hash_zip_file(f, prefix_check="example.com/oddzip@v1.0.0/") == report["Sum"]
