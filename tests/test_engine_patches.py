"""The engine patch mechanism: exact application, loud failures, and the build reporting them."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from pcai_inference.info import build_info

ENGINE = Path(__file__).resolve().parent.parent / "engine"
sys.path.insert(0, str(ENGINE))

import prepare_engine  # noqa: E402
import unified_diff  # noqa: E402

BEFORE = 'fn main() {\n    let a = 1;\n    let b = 2;\n    println!("{}", a + b);\n}\n'
AFTER = 'fn main() {\n    let a = 1;\n    let b = 3;\n    println!("{}", a + b);\n}\n'


def tree(root: Path, text: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.rs").write_text(text)
    return root


def test_a_written_diff_applies_back_exactly(tmp_path: Path) -> None:
    old, new = tree(tmp_path / "a", BEFORE), tree(tmp_path / "b", AFTER)
    patch = "Description: a header that the applier skips\n" + unified_diff.write(old, new)
    assert unified_diff.apply(patch, old) == ["src/main.rs"]
    assert (old / "src" / "main.rs").read_text() == AFTER


def test_a_hunk_whose_context_is_gone_is_an_error(tmp_path: Path) -> None:
    patch = unified_diff.write(tree(tmp_path / "a", BEFORE), tree(tmp_path / "b", AFTER))
    moved_on = tree(tmp_path / "c", BEFORE.replace("let a = 1", "let a = 10"))
    with pytest.raises(unified_diff.PatchError, match=r"src/main.rs: the hunk at line 1 does not match"):
        unified_diff.apply(patch, moved_on)
    assert (moved_on / "src" / "main.rs").read_text() == BEFORE.replace("let a = 1", "let a = 10")


def test_every_engine_patch_has_a_header_and_is_built_in() -> None:
    carried = []
    for crate in prepare_engine.patched_crates():
        assert crate.patches, f"{crate.name} is listed in engine/crates.txt without patches"
        for patch in crate.patches:
            header = patch.read_text().split("\n--- ", 1)[0]
            for field in ("Description:", "Why:", "Tested-by:", "Forwarded:", "Last-Update:"):
                assert field in header, f"{patch.name} has no {field} line"
            carried.append(f"{crate.name} {crate.version}/{patch.name}")
        stamp = (crate.folder / prepare_engine.STAMP).read_text()
        assert crate.sha256 in stamp
    assert build_info()["engine_patches"] == carried


def test_a_crate_with_another_checksum_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    crate = prepare_engine.patched_crates()[0]
    fake_home = tmp_path / "cargo"
    cached = fake_home / "registry" / "cache" / "index.example" / f"{crate.name}-{crate.version}.crate"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the published crate")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() != crate.sha256
    monkeypatch.setenv("CARGO_HOME", str(fake_home))
    monkeypatch.setattr(prepare_engine, "_fetch_with_cargo", lambda crate: None)
    with pytest.raises(prepare_engine.EngineBuildError, match="does not have the sha256 recorded"):
        prepare_engine._pristine_crate(crate)


def test_a_patch_that_no_longer_applies_fails_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    crate = prepare_engine.patched_crates()[0]
    broken = tmp_path / crate.name / "0001-stale.patch"
    broken.parent.mkdir()
    broken.write_text(
        "Description: context that is not in the crate\n"
        "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,1 +1,1 @@\n-no such line in the engine\n+anything\n"
    )
    monkeypatch.setattr(prepare_engine, "PATCHES_DIR", tmp_path)
    monkeypatch.setattr(prepare_engine, "BUILD_DIR", tmp_path / "build")
    with pytest.raises(prepare_engine.EngineBuildError, match=r"0001-stale.patch does not apply"):
        prepare_engine.prepare(crate)
    assert not (tmp_path / "build" / f"{crate.name}-{crate.version}").exists()


def test_a_patch_number_that_crates_share_must_name_its_crate() -> None:
    shared = [c for c in prepare_engine.patched_crates() if any(p.name.startswith("0001-") for p in c.patches)]
    assert len(shared) > 1, "this test needs two crates with a patch 0001"
    with pytest.raises(prepare_engine.EngineBuildError, match="names more than one patch"):
        prepare_engine._crate_of("0001")
    for crate in shared:
        found, before, patch = prepare_engine._crate_of(f"{crate.name}/0001")
        assert (found, before, patch) == (crate, [], crate.patches[0])
