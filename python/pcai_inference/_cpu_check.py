"""Refuse to import the native module on an x86-64 CPU that lacks what it was compiled for.

x86-64 builds target x86-64-v3 (``.cargo/config.toml``) because candle's quantized kernels pick
their SIMD code at compile time. Any function of the native module may use those
instructions, so on an older CPU importing it would die with an illegal instruction; this
check runs first, in pure Python, and raises ``ImportError`` naming the missing features.
"""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
from typing import Iterable, Optional

# x86-64-v3, as /proc/cpuinfo spells the flags (lzcnt is "abm").
REQUIRED_X86_64 = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")


def _is_x86_64() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64"}


def _linux_flags() -> Optional[set[str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _macos_flags() -> Optional[set[str]]:
    try:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features", "machdep.cpu.extfeatures"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = {w.lower().replace(".", "_") for w in out.split()}
    aliases = {"avx1_0": "avx", "fma": "fma", "lzcnt": "abm"}
    return {aliases.get(n, n) for n in names} | ({"xsave"} if "xsave" in names or "osxsave" in names else set())


def _windows_flags() -> Optional[set[str]]:
    try:
        present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    # PF_AVX_INSTRUCTIONS_AVAILABLE = 39, PF_AVX2_INSTRUCTIONS_AVAILABLE = 40. Windows reports
    # no other v3 feature; every CPU with AVX2 has them.
    if not present(40):
        return {"avx"} if present(39) else set()
    return set(REQUIRED_X86_64)


def cpu_flags() -> Optional[set[str]]:
    """This CPU's feature flags in /proc/cpuinfo spelling, or None where they cannot be read."""
    if sys.platform.startswith("linux"):
        return _linux_flags()
    if sys.platform == "darwin":
        return _macos_flags()
    if sys.platform == "win32":
        return _windows_flags()
    return None


def missing_features(flags: Optional[Iterable[str]], required: Iterable[str] = REQUIRED_X86_64) -> list[str]:
    """The required features absent from ``flags`` (none when the flags are unknown)."""
    if flags is None:
        return []
    have = set(flags)
    return [f for f in required if f not in have]


def refusal(missing: list[str]) -> str:
    return (
        "this build of pcai-inference targets x86-64-v3 CPUs, and this CPU lacks "
        f"{', '.join(missing)}; importing it would crash with an illegal instruction. Build it "
        "for this CPU instead: pip install --no-binary pcai-inference pcai-inference with "
        'RUSTFLAGS="-C target-cpu=native" (or build from the source tree with maturin)'
    )


def check_cpu() -> None:
    if not _is_x86_64():
        return
    missing = missing_features(cpu_flags())
    if missing:
        raise ImportError(refusal(missing))
