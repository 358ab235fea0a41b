"""Builds the engine crates we patch: fetched by cargo, checksum-checked, patched, in engine/build.

`Cargo.toml`'s `[patch.crates-io]` points each crate listed in `engine/crates.txt` at
`engine/build/<name>-<version>`. This script makes that folder: cargo fetches the published
`.crate` from the registry, its sha256 must equal the one we recorded, and the patches in
`engine/patches/<name>/` are applied in file-name order, each exactly (a patch that no longer
applies stops the build, naming it). A folder already built from the same crate and patches is
left untouched, so cargo does not recompile it.

    python engine/prepare_engine.py                       # prepare every crate (the build does this)
    python engine/prepare_engine.py --stage NAME DIR      # DIR/a: before patch NAME, DIR/b: with it
    python engine/prepare_engine.py --refresh NAME DIR    # rewrite patch NAME as the diff DIR/a -> DIR/b

NAME is a patch's file name, stem or number, as `CRATE/NAME` where crates share it
(`candle-core/0001`).

Standard library only: the PEP 517 backend (`engine/pcai_build_backend.py`) imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unified_diff

ENGINE_DIR = Path(__file__).resolve().parent
BUILD_DIR = ENGINE_DIR / "build"
PATCHES_DIR = ENGINE_DIR / "patches"
STAMP = ".pcai-engine-patches.json"


class EngineBuildError(Exception):
    """The engine crates could not be prepared; the message says which crate or patch."""


@dataclass(frozen=True)
class PatchedCrate:
    name: str
    version: str
    sha256: str

    @property
    def folder(self) -> Path:
        return BUILD_DIR / f"{self.name}-{self.version}"

    @property
    def patches(self) -> list[Path]:
        return sorted((PATCHES_DIR / self.name).glob("*.patch"))


def patched_crates() -> list[PatchedCrate]:
    crates = []
    for line in (ENGINE_DIR / "crates.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, version, sha256 = line.split()
            crates.append(PatchedCrate(name, version, sha256.lower()))
    return crates


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cargo_home() -> Path:
    return Path(os.environ.get("CARGO_HOME") or Path.home() / ".cargo")


def _cached_crate(crate: PatchedCrate) -> Path | None:
    for candidate in sorted(_cargo_home().glob(f"registry/cache/*/{crate.name}-{crate.version}.crate")):
        if _sha256(candidate) == crate.sha256:
            return candidate
    return None


def _fetch_with_cargo(crate: PatchedCrate) -> None:
    """Has cargo download the published crate into its registry cache (a throwaway manifest)."""
    with tempfile.TemporaryDirectory(prefix="pcai-engine-fetch-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "src" / "lib.rs").write_text("", encoding="utf-8")
        (root / "Cargo.toml").write_text(
            '[package]\nname = "pcai-engine-fetch"\nversion = "0.0.0"\nedition = "2021"\n'
            f'[dependencies]\n{crate.name} = "={crate.version}"\n',
            encoding="utf-8",
        )
        lock = ENGINE_DIR.parent / "Cargo.lock"
        if lock.is_file():  # keep the versions of everything else as we pinned them
            shutil.copy(lock, root / "Cargo.lock")
        cargo = os.environ.get("CARGO", "cargo")
        result = subprocess.run(
            [cargo, "fetch", "--manifest-path", str(root / "Cargo.toml")],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EngineBuildError(
                f"cargo could not fetch {crate.name} {crate.version} from the registry:\n{result.stderr[-2000:]}"
            )


def _pristine_crate(crate: PatchedCrate) -> Path:
    found = _cached_crate(crate)
    if found is None:
        _fetch_with_cargo(crate)
        found = _cached_crate(crate)
    if found is None:
        raise EngineBuildError(
            f"{crate.name}-{crate.version}.crate in cargo's cache does not have the sha256 recorded in "
            f"engine/crates.txt ({crate.sha256}); the registry copy differs from the one our patches are for"
        )
    return found


def _unpack(crate_file: Path, crate: PatchedCrate, into: Path) -> Path:
    """Unpacks a .crate (a gzipped tar holding `<name>-<version>/`) and returns that folder."""
    with tarfile.open(crate_file, "r:gz") as archive:
        top = f"{crate.name}-{crate.version}"
        for member in archive.getmembers():
            if not (member.name == top or member.name.startswith(top + "/")) or not (member.isfile() or member.isdir()):
                raise EngineBuildError(f"{crate_file.name} holds an unexpected entry {member.name!r}")
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
    return into / top


def _stamp(crate: PatchedCrate, patches: list[Path]) -> dict[str, object]:
    return {
        "crate": f"{crate.name} {crate.version}",
        "sha256": crate.sha256,
        "patches": [{"name": p.name, "sha256": _sha256(p)} for p in patches],
    }


def _apply(patches: list[Path], tree: Path) -> None:
    for patch in patches:
        try:
            unified_diff.apply(patch.read_text(encoding="utf-8"), tree)
        except unified_diff.PatchError as e:
            raise EngineBuildError(
                f"engine patch {patch.parent.name}/{patch.name} does not apply to {tree.name}: {e}"
            ) from e


def prepare(crate: PatchedCrate) -> bool:
    """Makes engine/build/<name>-<version>; returns whether it had to be (re)built."""
    wanted = _stamp(crate, crate.patches)
    stamp_file = crate.folder / STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text(encoding="utf-8")) == wanted:
        return False
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=BUILD_DIR) as tmp:
        tree = _unpack(_pristine_crate(crate), crate, Path(tmp))
        _apply(crate.patches, tree)
        (tree / STAMP).write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
        if crate.folder.exists():
            shutil.rmtree(crate.folder)
        tree.rename(crate.folder)
    return True


def prepare_all(verbose: bool = True) -> None:
    for crate in patched_crates():
        rebuilt = prepare(crate)
        if verbose:
            names = ", ".join(p.name for p in crate.patches) or "no patches"
            state = "prepared" if rebuilt else "up to date"
            print(f"engine: {crate.name} {crate.version} {state} ({names})", file=sys.stderr)


def _crate_of(patch_name: str) -> tuple[PatchedCrate, list[Path], Path]:
    """The patch named `NAME` (its file name, stem or number) or `CRATE/NAME`, with its crate and
    the patches applied before it. A name that more than one crate has is refused."""
    crate_name, _, name = patch_name.rpartition("/")
    found = [
        (crate, crate.patches[:i], patch)
        for crate in patched_crates()
        if crate_name in ("", crate.name)
        for i, patch in enumerate(crate.patches)
        if name in (patch.name, patch.stem) or patch.name.startswith(f"{name}-")
    ]
    if not found:
        raise EngineBuildError(f"no engine patch named {patch_name}")
    if len(found) > 1:
        names = ", ".join(f"{crate.name}/{patch.name}" for crate, _, patch in found)
        raise EngineBuildError(f"{patch_name} names more than one patch ({names}): name it as CRATE/NAME")
    return found[0]


def stage(patch_name: str, into: Path) -> None:
    """DIR/a: the crate with the patches before NAME; DIR/b: with NAME applied too (edit it)."""
    crate, before, patch = _crate_of(patch_name)
    pristine = _pristine_crate(crate)
    # A new patch is a header alone until its first refresh: `b` starts as `a`.
    has_body = "\n--- " in patch.read_text(encoding="utf-8")
    for side, patches in (("a", before), ("b", [*before, patch] if has_body else before)):
        if (into / side).exists():
            raise EngineBuildError(f"{into / side} exists; choose an empty folder")
        (into / side).mkdir(parents=True)
        _apply(patches, _unpack(pristine, crate, into / side).rename(into / side / "crate"))
    refresh_command = f"python engine/prepare_engine.py --refresh {crate.name}/{patch.name} {into}"
    print(f"edit {into / 'b' / 'crate'}, then: {refresh_command}")


def refresh(patch_name: str, staged: Path) -> None:
    """Rewrites patch NAME as the diff between DIR/a and DIR/b, keeping its header."""
    _, _, patch = _crate_of(patch_name)
    text = patch.read_text(encoding="utf-8")
    header = text[: text.find("\n--- ") + 1] if "\n--- " in text else text
    body = unified_diff.write(staged / "a" / "crate", staged / "b" / "crate")
    if not body:
        raise EngineBuildError("DIR/a and DIR/b are the same: the patch would be empty")
    patch.write_text(header + body, encoding="utf-8")
    print(f"wrote {patch}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", nargs=2, metavar=("NAME", "DIR"))
    group.add_argument("--refresh", nargs=2, metavar=("NAME", "DIR"))
    args = parser.parse_args(argv)
    try:
        if args.stage:
            stage(args.stage[0], Path(args.stage[1]))
        elif args.refresh:
            refresh(args.refresh[0], Path(args.refresh[1]))
        else:
            prepare_all()
    except EngineBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
