"""Strict unified diffs: apply one to a tree, or write one from two trees.

Our engine patches must apply exactly or not at all: a hunk whose context is not found is an
error, never a fuzzy match. Standard library only (it runs inside the PEP 517 build backend).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    """A patch that does not apply, or is not a unified diff."""


@dataclass
class Hunk:
    old_start: int
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


@dataclass
class FileDiff:
    path: str
    hunks: list[Hunk] = field(default_factory=list)
    created: bool = False


def _strip_prefix(name: str) -> str:
    name = name.split("\t", 1)[0].strip()
    return name.split("/", 1)[1] if "/" in name else name


def parse(text: str) -> list[FileDiff]:
    """The file diffs of a patch; lines before the first `---` (the header) are skipped."""
    lines = text.splitlines(keepends=True)
    files: list[FileDiff] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old_name = line[4:]
            files.append(FileDiff(path=_strip_prefix(lines[i + 1][4:]), created=old_name.startswith("/dev/null")))
            i += 2
            continue
        match = _HUNK.match(line)
        if match:
            if not files:
                raise PatchError(f"line {i + 1}: a hunk before any file header")
            old_len = int(match.group(2) or "1")
            new_len = int(match.group(4) or "1")
            hunk = Hunk(old_start=int(match.group(1)))
            i += 1
            while len(hunk.old) < old_len or len(hunk.new) < new_len:
                if i >= len(lines):
                    raise PatchError(f"hunk at old line {hunk.old_start} of {files[-1].path} is cut short")
                body = lines[i]
                if body.startswith("\\"):
                    i += 1
                    continue
                # An empty line is a context line whose leading space an editor stripped.
                tag, content = (" ", "\n") if body == "\n" else (body[:1], body[1:])
                if tag == " ":
                    hunk.old.append(content)
                    hunk.new.append(content)
                elif tag == "-":
                    hunk.old.append(content)
                elif tag == "+":
                    hunk.new.append(content)
                else:
                    raise PatchError(f"line {i + 1}: {body.rstrip()!r} is not part of a unified diff hunk")
                i += 1
            files[-1].hunks.append(hunk)
            continue
        i += 1
    if not files:
        raise PatchError("no file diffs found")
    return files


def _find(haystack: list[str], needle: list[str], near: int) -> int:
    """Where `needle` occurs in `haystack`, the occurrence nearest to `near`; -1 if nowhere."""
    if not needle:
        return min(max(near, 0), len(haystack))
    starts = [s for s in range(len(haystack) - len(needle) + 1) if haystack[s : s + len(needle)] == needle]
    return min(starts, key=lambda s: abs(s - near)) if starts else -1


def apply(patch_text: str, root: Path) -> list[str]:
    """Applies a patch to the files under `root`; returns the paths it changed."""
    changed = []
    for diff in parse(patch_text):
        target = root / diff.path
        if diff.created:
            if target.exists():
                raise PatchError(f"{diff.path} would be created but exists")
            current: list[str] = []
        else:
            if not target.is_file():
                raise PatchError(f"{diff.path} does not exist")
            current = target.read_text(encoding="utf-8").splitlines(keepends=True)
        shift = 0
        for hunk in diff.hunks:
            at = _find(current, hunk.old, hunk.old_start - 1 + shift)
            if at < 0:
                raise PatchError(f"{diff.path}: the hunk at line {hunk.old_start} does not match the file")
            current[at : at + len(hunk.old)] = hunk.new
            shift += len(hunk.new) - len(hunk.old)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(current), encoding="utf-8")
        changed.append(diff.path)
    return changed


def write(old_root: Path, new_root: Path, context: int = 3) -> str:
    """The unified diff that turns the text files under `old_root` into those under `new_root`.

    Files that are byte-for-byte the same are skipped unread (a crate may ship binary test data).
    """
    names = sorted(
        {p.relative_to(old_root).as_posix() for p in old_root.rglob("*") if p.is_file()}
        | {p.relative_to(new_root).as_posix() for p in new_root.rglob("*") if p.is_file()}
    )
    out: list[str] = []
    for name in names:
        old_file, new_file = old_root / name, new_root / name
        if old_file.is_file() and new_file.is_file() and old_file.read_bytes() == new_file.read_bytes():
            continue
        old = old_file.read_text(encoding="utf-8").splitlines(keepends=True) if old_file.is_file() else []
        new = new_file.read_text(encoding="utf-8").splitlines(keepends=True) if new_file.is_file() else []
        if old == new:
            continue
        from_name = f"a/{name}" if old_file.is_file() else "/dev/null"
        out.extend(difflib.unified_diff(old, new, from_name, f"b/{name}", n=context))
    return "".join(out)
