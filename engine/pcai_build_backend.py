"""PEP 517 build backend: prepares the patched engine crates, then hands over to maturin.

`pyproject.toml` names this module (`backend-path = ["engine"]`), so `pip install .`,
`pip wheel .` and `python -m build` build from a fresh clone in one command: every hook that
runs cargo first makes `engine/build/` (see `prepare_engine.py`).
"""

from __future__ import annotations

from typing import Any

import maturin
import prepare_engine

# Hooks that do not run cargo are maturin's own.
get_requires_for_build_wheel = maturin.get_requires_for_build_wheel
get_requires_for_build_sdist = maturin.get_requires_for_build_sdist
get_requires_for_build_editable = maturin.get_requires_for_build_editable


def _prepared() -> None:
    try:
        prepare_engine.prepare_all()
    except prepare_engine.EngineBuildError as e:
        raise SystemExit(f"error: {e}") from e


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    _prepared()
    return str(maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings))


def build_wheel(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    _prepared()
    return str(maturin.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    _prepared()
    return str(maturin.build_editable(wheel_directory, config_settings, metadata_directory))


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    _prepared()
    return str(maturin.build_sdist(sdist_directory, config_settings))
