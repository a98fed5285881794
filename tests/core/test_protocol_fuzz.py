"""Property tests of the pure protocol core (hypothesis)."""

from __future__ import annotations

import contextlib
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core import modpath
from router.core.errors import ProtocolError
from router.core.protocol import ModuleRequest, SumdbRequest, parse_request_target

FAST = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

element = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
module_paths = st.builds(
    lambda host, rest: "/".join([host.lower() + ".com", *rest]),
    element,
    st.lists(element, min_size=0, max_size=4),
)
versions = st.builds(
    lambda a, b, c, pre: f"v{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 1),
    st.integers(0, 99),
    st.integers(0, 99),
    st.one_of(
        st.none(), st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6)
    ),
)


@FAST
@given(module_paths)
def test_escape_unescape_round_trip(path: str) -> None:
    try:
        modpath.check_path(path)
    except ProtocolError:
        return
    escaped = modpath.escape_path(path)
    assert escaped == escaped.lower()
    assert modpath.unescape_path(escaped) == path


@FAST
@given(st.text(max_size=120))
def test_parse_raises_only_its_own_error(raw: str) -> None:
    for target in (raw, "/" + raw):
        with contextlib.suppress(ProtocolError):
            parse_request_target(target)


@FAST
@given(st.binary(max_size=120))
def test_parse_of_arbitrary_bytes_raises_only_its_own_error(raw: bytes) -> None:
    target = "/" + "".join(f"%{b:02X}" if b < 0x21 or b > 0x7E else chr(b) for b in raw)
    with contextlib.suppress(ProtocolError):
        parse_request_target(target)


@FAST
@given(module_paths, versions, st.sampled_from(["info", "mod", "zip"]))
def test_every_accepted_request_re_encodes_to_a_valid_upstream_path(
    path: str, version: str, ext: str
) -> None:
    try:
        modpath.check_path(path)
    except ProtocolError:
        return
    target = f"/{modpath.escape_path(path)}/@v/{modpath.escape_version(version)}.{ext}"
    try:
        req = parse_request_target(target)
    except ProtocolError:
        return
    assert isinstance(req, ModuleRequest)
    upstream = req.upstream_path()
    assert ".." not in upstream.split("/") and "\\\\" not in upstream and "//" not in upstream
    assert all(32 < ord(c) < 127 for c in upstream)
    again = parse_request_target("/" + upstream)  # what we send is itself a valid request
    assert again == req


@FAST
@given(st.text(alphabet=string.printable, max_size=60))
def test_sumdb_paths_never_escape(rest: str) -> None:
    try:
        req = parse_request_target("/sumdb/sum.golang.org/" + rest)
    except ProtocolError:
        return
    assert isinstance(req, (SumdbRequest, ModuleRequest))
    path = req.upstream_path()
    assert ".." not in path.split("/") and "\\\\" not in path
