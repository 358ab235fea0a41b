"""The import-time CPU check: a CPU without the wheel's instruction sets gets ImportError."""

from __future__ import annotations

import platform

import pytest

from pcai_inference import _core, build_info
from pcai_inference._cpu_check import REQUIRED_X86_64, check_cpu, cpu_flags, missing_features, refusal


def test_an_old_cpu_is_refused_with_the_missing_features_named() -> None:
    sandy_bridge = {"sse4_2", "avx", "xsave", "popcnt"}
    missing = missing_features(sandy_bridge)
    assert missing == ["avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"]
    message = refusal(missing)
    assert "avx2" in message and "fma" in message and "target-cpu=native" in message


def test_unknown_flags_do_not_block_import() -> None:
    assert missing_features(None) == []


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="x86-64 only")
def test_this_cpu_passes_and_agrees_with_the_native_module() -> None:
    check_cpu()
    flags = cpu_flags()
    assert flags is not None
    assert missing_features(flags) == []
    # The native module reports the same CPU: every kernel feature it was built for is present.
    for name, compiled, present in _core.cpu_kernels():
        assert present == (name in flags), name
        assert present or not compiled
    assert set(build_info()["cpu_kernels"]) >= {"avx2", "fma"}


def test_required_list_matches_the_build_target() -> None:
    from pathlib import Path

    config = (Path(__file__).resolve().parents[1] / ".cargo" / "config.toml").read_text()
    assert "target-cpu=x86-64-v3" in config
    assert set(REQUIRED_X86_64) >= {"avx", "avx2", "fma", "f16c"}
