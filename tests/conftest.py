"""Shared fixtures: the real Gemma 3 270M GGUF, loaded once per session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from pcai_inference import BackendType, InferenceBackend, default_model_path

# Two prompts with the same token count (checked in test_concurrency), and some others.
PROMPTS = [
    "The history of the Roman Empire began",
    "The capital city of France is Paris and",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The Great Wall of China is a series of fortifications",
    "Water boils at a temperature of",
    "My favourite recipe for pancakes uses",
    "In mathematics, a prime number is",
]


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def hf_folder(model_path: Path) -> Path:
    """The Gemma 3 270M weights as a float32 Hugging Face SafeTensors folder (tests/hf_folder.py)."""
    from hf_folder import cached_gemma3_folder

    return cached_gemma3_folder(model_path)


def loaded(model: Path, **options: Any) -> Iterator[InferenceBackend]:
    """A CPU backend with `model` loaded with `options`, unloaded afterwards (for fixtures)."""
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model, **options)
    yield b
    b.unload()


@pytest.fixture(scope="session")
def backend(model_path: Path) -> Iterator[InferenceBackend]:
    yield from loaded(model_path)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs code in a fresh interpreter, so a crash there is a failed test, not a dead run."""
    full_env = dict(os.environ)
    full_env.pop("PCAI_LOG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


# For code run by `run_python`: the process's memory high-water mark in KiB. VmHWM starts afresh
# at exec; `ru_maxrss` would carry the test process's peak over.
HIGH_WATER_KIB = """
def high_water_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""
