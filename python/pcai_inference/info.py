"""What this build is: versions, engine patches, compiled features, kernels and the ``auto`` device."""

from __future__ import annotations

from typing import Any

from . import _core


def build_info() -> dict[str, Any]:
    """Versions, the engine patches built in, cargo features, CPU kernel instruction sets and the
    ``auto`` device."""
    return {
        "pcai_inference": _core.__version__,
        "mistralrs": _core.MISTRALRS_VERSION,
        "engine_patches": list(_core.engine_patches()),
        "features": list(_core.build_features()),
        "cpu_kernels": {
            name: {"compiled": compiled, "cpu_has": present} for name, compiled, present in _core.cpu_kernels()
        },
        "auto_device": _core.resolve_device_name("auto"),
    }
