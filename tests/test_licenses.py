"""Licence detection over real licence texts in real module zips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from support.data import licence_text
from support.gomod import FixtureModule, simple_module, write_zip
from support.licensed import licensed_module

from router import licenses
from router.core.policy import LicenceFile, LicenceFindings
from router.licenses import Detection, DetectionStore, IsolatedDetector, detect, is_licence_file

M = "example.com/lic"
V = "v1.0.0"

SINGLE = [
    ("LICENSE", "MIT", "MIT"),
    ("LICENSE", "Apache-2.0", "Apache-2.0"),
    ("LICENSE", "BSD-2-Clause", "BSD-2-Clause"),
    ("LICENSE", "BSD-3-Clause", "BSD-3-Clause"),
    ("LICENSE", "ISC", "ISC"),
    ("LICENSE", "MPL-2.0", "MPL-2.0"),
    ("COPYING", "GPL-2.0-only", "GPL-2.0-only"),
    ("COPYING", "GPL-3.0-only", "GPL-3.0-only"),
    ("LICENSE", "AGPL-3.0-only", "AGPL-3.0-only"),
    ("LICENSE", "LGPL-2.1-only", "LGPL-2.1-only"),
    ("LICENSE.txt", "LGPL-3.0-only", "LGPL-3.0-only"),
    ("UNLICENSE", "Unlicense", "Unlicense"),
]


def _detect(tmp_path: Path, module: FixtureModule) -> Detection:
    return detect(write_zip(module, tmp_path / "m.zip"), module.path, module.version)


@pytest.mark.parametrize(("name", "text", "spdx"), SINGLE, ids=[s[1] for s in SINGLE])
def test_each_real_licence_text_is_identified(
    tmp_path: Path, name: str, text: str, spdx: str
) -> None:
    found = _detect(tmp_path, licensed_module(M, V, {name: text})).findings
    assert found.files == (LicenceFile(name, (spdx,)),)
    assert found.unknown == ""


def test_a_dual_licensed_module_has_both(tmp_path: Path) -> None:
    module = licensed_module(M, V, {"LICENSE-MIT": "MIT", "LICENSE-APACHE": "Apache-2.0"})
    found = _detect(tmp_path, module).findings
    assert found.ids == ("Apache-2.0", "MIT")
    assert [f.path for f in found.files] == ["LICENSE-APACHE", "LICENSE-MIT"]


def test_two_licences_in_one_file(tmp_path: Path) -> None:
    both = licence_text("MIT") + "\n\n" + licence_text("Apache-2.0")
    module = simple_module(M, V, extra_files={"LICENSE": both.encode()})
    assert _detect(tmp_path, module).findings.ids == ("Apache-2.0", "MIT")


def test_no_licence_is_unknown(tmp_path: Path) -> None:
    found = _detect(tmp_path, simple_module(M, V)).findings
    assert found.files == ()
    assert found.unknown == "no licence file at the module root"


def test_a_licence_only_in_a_subdirectory_or_vendor_does_not_count(tmp_path: Path) -> None:
    module = licensed_module(
        M, V, {"sub/LICENSE": "MIT", "vendor/github.com/x/y/LICENSE": "GPL-3.0-only"}
    )
    found = _detect(tmp_path, module).findings
    assert found.files == ()
    assert found.unknown == "no licence file at the module root"


def test_names_are_matched_without_case(tmp_path: Path) -> None:
    module = licensed_module(M, V, {"license.md": "MIT", "Copying.txt": "BSD-3-Clause"})
    found = _detect(tmp_path, module).findings
    assert [(f.path, f.ids) for f in found.files] == [
        ("Copying.txt", ("BSD-3-Clause",)),
        ("license.md", ("MIT",)),
    ]


def test_files_pkg_go_dev_does_not_read_are_ignored(tmp_path: Path) -> None:
    module = licensed_module(
        M, V, {"LICENSE": "MIT", "COPYING.LESSER": "LGPL-3.0-only", "NOTICE": "Apache-2.0"}
    )
    assert _detect(tmp_path, module).findings.ids == ("MIT",)


def test_an_edited_licence_is_not_recognised(tmp_path: Path) -> None:
    edited = (
        licence_text("MIT").replace(
            "The above copyright notice", "Except on Tuesdays, the above copyright notice"
        )
        + "\nYou must also send the authors a postcard from every city you deploy in.\n" * 20
    )
    module = simple_module(M, V, extra_files={"LICENSE": edited.encode()})
    found = _detect(tmp_path, module).findings
    assert found.files == (LicenceFile("LICENSE", ()),)
    assert found.unknown == "licence in LICENSE not recognised"


def test_a_readme_mentioning_mit_is_not_a_licence(tmp_path: Path) -> None:
    text = b"This project is released under the MIT license. See the website.\n"
    found = _detect(tmp_path, simple_module(M, V, extra_files={"LICENSE.md": text})).findings
    assert found.unknown == "licence in LICENSE.md not recognised"


def test_a_broken_zip_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not a zip at all")
    found = detect(path, M, V).findings
    assert found.problem.startswith("the zip cannot be read")
    assert found.unknown.startswith("licence not determined: the zip cannot be read")
    assert detect(tmp_path / "absent.zip", M, V).findings.problem.startswith("the zip cannot")


def test_a_zip_too_big_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_zip(licensed_module(M, V, {"LICENSE": "MIT"}), tmp_path / "m.zip")
    monkeypatch.setattr(licenses, "MAX_ZIP_BYTES", path.stat().st_size - 1)
    assert detect(path, M, V).findings.problem == "the zip is larger than 500 MiB"


def test_a_licence_file_too_big_is_unknown(tmp_path: Path) -> None:
    huge = (licence_text("GPL-3.0-only") * 40).encode()
    assert len(huge) > licenses.MAX_FILE_BYTES
    found = _detect(tmp_path, simple_module(M, V, extra_files={"COPYING": huge})).findings
    assert found.problem == "COPYING cannot be read (larger than 1 MiB)"


def test_a_zip_bomb_entry_is_read_only_up_to_the_cap(tmp_path: Path) -> None:
    """The size written in the zip's directory is not trusted: reading stops at the cap."""
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{M}@{V}/LICENSE", b"a " * (8 << 20))
    found = detect(path, M, V).findings
    assert found.problem == "LICENSE cannot be read (larger than 1 MiB)"


def test_too_many_licence_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(licenses, "MAX_FILES", 1)
    module = licensed_module(M, V, {"LICENSE-MIT": "MIT", "LICENSE-APACHE": "Apache-2.0"})
    assert _detect(tmp_path, module).findings.problem == "more than 1 licence files"


def test_only_the_modules_own_root_counts() -> None:
    root = f"{M}@{V}/"
    assert is_licence_file(root + "LICENSE", root)
    assert is_licence_file(root + "mit-licence.markdown", root)
    assert not is_licence_file(root + "docs/LICENSE", root)
    assert not is_licence_file(f"{M}@v1.0.1/LICENSE", root)
    assert not is_licence_file(root + "LICENSE.go", root)
    assert len(licenses.FILE_NAMES) == 40


def test_results_round_trip_and_are_kept(tmp_path: Path) -> None:
    detection = _detect(tmp_path, licensed_module(M, V, {"LICENSE": "MIT", "COPYING": "ISC"}))
    assert detection.detector.startswith("licenseclassifier ")
    again = Detection.from_json(json.loads(json.dumps(detection.to_json())))
    assert again == detection
    store = DetectionStore(tmp_path / "licences")
    assert store.get(M, V) is None
    store.put(detection)
    assert store.get(M, V) == detection
    assert store.get(M, "v1.0.1") is None
    with pytest.raises(ValueError, match="not a licence detection"):
        Detection.from_json({"module": M})


def test_a_damaged_stored_result_is_absent(tmp_path: Path) -> None:
    store = DetectionStore(tmp_path)
    store.put(Detection(M, V, LicenceFindings()))
    for file in tmp_path.rglob("*.json"):
        file.write_text("{not json")
    assert store.get(M, V) is None


@pytest.mark.slow
async def test_the_isolated_detector_agrees_and_is_bounded_in_time(tmp_path: Path) -> None:
    path = write_zip(licensed_module(M, V, {"COPYING": "GPL-3.0-only"}), tmp_path / "m.zip")
    detector = IsolatedDetector(timeout=60, recycle_after=1)
    try:
        first = await detector.detect(path, M, V)
        second = await detector.detect(path, M, V)  # a fresh child: recycled after one job
    finally:
        detector.close()
    assert first == second == detect(path, M, V)
    hurried = IsolatedDetector(timeout=0.001)
    try:
        late = await hurried.detect(path, M, V)
    finally:
        hurried.close()
    assert late.findings.problem == "detection took longer than 0.001s"
