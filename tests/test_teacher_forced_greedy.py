"""The correctness rule for generation, teacher-forced: at every step of our greedy continuation
of each llama.cpp reference prompt, the token we chose is within 0.5 logits of the best token
under exact float64 arithmetic of the same weights (tools/gemma3_exact_greedy.py) evaluated on
our own prefix. A broken kernel or engine change picks tokens the exact model is sure against."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from pcai_inference import GenerateRequest, InferenceBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gemma3_exact_greedy import ExactGemma3

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "gemma3-270m-greedy.json"
CASES: list[dict[str, Any]] = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"] if REFERENCE.is_file() else []
TOLERANCE = 0.5


class ExactModel(Protocol):
    """A float64 evaluator (tools/gemma3_exact_greedy.py, tools/llama_exact_greedy.py)."""

    def step(self, ids: list[int], start: int, kv: dict[int, Any]) -> np.ndarray: ...


@pytest.fixture(scope="module")
def exact(model_path: Path) -> ExactGemma3:
    return ExactGemma3(str(model_path))


def greedy_gaps(backend: InferenceBackend, exact: ExactModel, case: dict[str, Any]) -> tuple[list[int], list[float]]:
    """Our greedy continuation of a reference case, and at each step how far the token we chose is
    below the exact best on our own prefix (teacher-forced). A case may ask for its prompt's
    control-token texts to be read as control tokens (``parse_special``, chat prompts)."""
    prompt = case["prompt_token_ids"]
    special = bool(case.get("parse_special", False))
    assert backend.tokenize(case["prompt"], parse_special=special) == prompt
    req = GenerateRequest(prompt=case["prompt"], max_tokens=32, temperature=0.0, parse_special=special)
    ours = list(backend.generate(req).token_ids)
    assert ours
    kv: dict[int, Any] = {}
    logits = exact.step(prompt, 0, kv)
    gaps = []
    for t, token in enumerate(ours):
        gaps.append(float(logits.max() - logits[token]))
        logits = exact.step([token], len(prompt) + t, kv)
    return ours, gaps


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_every_greedy_choice_is_within_half_a_logit_of_the_exact_best(
    backend: InferenceBackend, exact: ExactGemma3, case: dict[str, Any]
) -> None:
    ours, gaps = greedy_gaps(backend, exact, case)
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    print(f"{case['id']}: {len(ours)} tokens, largest gap to the exact best {gaps[worst]:.4f} at step {worst}")
    assert gaps[worst] <= TOLERANCE, f"step {worst}: chose {ours[worst]}, {gaps[worst]:.3f} below the exact best"


def test_reference_cases_are_present() -> None:
    assert len(CASES) >= 10
