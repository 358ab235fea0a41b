"""Our GGUF tokenizer conversion against llama.cpp's token ids for the Gemma 3 model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pcai_inference import InferenceBackend

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "gemma3-270m-tokens.json"


def _reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        pytest.fail(f"reference data missing: {REFERENCE} (the project's shared/ folder sits beside the checkout)")
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_reference_is_for_this_model(model_path: Path) -> None:
    digest = hashlib.sha256()
    with model_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == _reference()["model_sha256"]


CASES = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"] if REFERENCE.is_file() else []


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_token_ids_match_llama_cpp(backend: InferenceBackend, case: dict[str, Any]) -> None:
    assert backend.tokenize(case["text"], add_special_tokens=True) == case["ids_add_bos"]
    assert backend.tokenize(case["text"], add_special_tokens=False) == case["ids_no_bos"]
    assert backend.detokenize(case["ids_no_bos"]) == case["text"]


def test_all_thirty_cases_are_checked() -> None:
    assert len(CASES) == 30
