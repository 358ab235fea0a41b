"""A Hugging Face SafeTensors folder: the Gemma 3 270M weights dequantized to float32
(tests/hf_folder.py), loaded through the engine's SafeTensors loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from hf_folder import cached_exact_continuations
from test_greedy_reference import CASES, assert_parts_only_at_near_ties
from test_tokenizer_option import swapped_tokenizer, word_ids

from pcai_inference import (
    BackendType,
    InferenceBackend,
    InvalidRequestError,
    ModelFormatError,
    Tokenizer,
)

PROMPT = "The history of the Roman Empire began"


@pytest.fixture(scope="module")
def folder_backend(hf_folder: Path) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(hf_folder, max_context=1024)
    yield b
    b.unload()


def test_folder_loads_with_its_own_metadata(folder_backend: InferenceBackend, hf_folder: Path) -> None:
    assert folder_backend.is_loaded
    assert folder_backend.model_path == hf_folder.resolve()  # type: ignore[attr-defined]
    assert folder_backend.context_window == 1024  # type: ignore[attr-defined]
    # generation_config.json's end-of-sequence ids, <eos> and <end_of_turn>.
    assert set(folder_backend.tokenizer.eog_ids) >= {1, 106}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def folder_greedy(folder_backend: InferenceBackend) -> dict[str, list[int]]:
    """32 greedy ids per reference case; the prompts tokenize to llama.cpp's ids."""
    out = {}
    for case in CASES:
        assert folder_backend.tokenize(case["prompt"]) == case["prompt_token_ids"], case["id"]
        out[case["id"]] = assert_parts_only_at_near_ties(folder_backend, case)
    return out


def test_folder_greedy_parts_from_llama_cpp_only_at_near_ties(folder_greedy: dict[str, list[int]]) -> None:
    """(Checked per case in the fixture.) Where it parts, llama.cpp's top-2 margin is < 0.5."""
    assert len(folder_greedy) == len(CASES)


def test_folder_greedy_is_exact_arithmetic(folder_greedy: dict[str, list[int]], model_path: Path) -> None:
    """All 12 x 32 ids equal a float64 computation of the same weights (tools/gemma3_exact_greedy.py):
    this path computes the model exactly, up to float32 rounding."""
    exact = cached_exact_continuations(model_path, CASES)
    assert {c["id"]: exact[c["id"]] for c in CASES} == folder_greedy


def test_chat_template_comes_from_tokenizer_config(folder_backend: InferenceBackend) -> None:
    r = folder_backend.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
    rendered = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert r.prompt_tokens == len(folder_backend.tokenize(rendered, add_special_tokens=True, parse_special=True)) == 10


def test_in_situ_quantization_keeps_the_greedy_text(folder_backend: InferenceBackend, hf_folder: Path) -> None:
    full = folder_backend.generate(PROMPT, max_tokens=16, temperature=0.0)
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(hf_folder, isq="Q8_0", max_context=256)
        q8 = b.generate(PROMPT, max_tokens=16, temperature=0.0)
    assert q8.token_ids == full.token_ids


def test_an_isq_load_leaves_later_loads_unquantized(folder_backend: InferenceBackend, hf_folder: Path) -> None:
    """ISQ is a setting of the load that asks for it: the engine kept it in a thread-local, and the
    next model loaded on the thread was quantized too (engine patch 0021)."""
    before = folder_backend.generate(PROMPT, max_tokens=8, temperature=0.0, logprobs=True).token_logprobs
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(hf_folder, isq="Q8_0", max_context=256)
        quantized = b.generate(PROMPT, max_tokens=8, temperature=0.0, logprobs=True).token_logprobs
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(hf_folder, max_context=1024)
        after = b.generate(PROMPT, max_tokens=8, temperature=0.0, logprobs=True).token_logprobs
    assert before is not None and quantized is not None and after is not None
    assert quantized != pytest.approx(before, abs=1e-5)  # the quantization shows
    assert after == pytest.approx(before, abs=1e-5)


def _copy_without(source: Path, dest: Path, *missing: str) -> Path:
    dest.mkdir()
    for f in source.iterdir():
        if f.name not in missing:
            (dest / f.name).symlink_to(f)
    return dest


@pytest.mark.parametrize(
    ("missing", "named"),
    [("config.json", "config.json"), ("model.safetensors", ".safetensors"), ("tokenizer.json", "tokenizer.json")],
)
def test_incomplete_folder_names_what_is_missing(hf_folder: Path, tmp_path: Path, missing: str, named: str) -> None:
    broken = _copy_without(hf_folder, tmp_path / "broken", missing)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError, match=named.replace(".", r"\.")):
        b.load_model(broken)
    assert not b.is_loaded


def test_config_without_architectures(hf_folder: Path, tmp_path: Path) -> None:
    broken = _copy_without(hf_folder, tmp_path / "broken", "config.json")
    config = json.loads((hf_folder / "config.json").read_text())
    del config["architectures"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="architectures"):
        BackendType.MISTRALRS.create(device="cpu").load_model(broken)


@pytest.mark.parametrize("kwargs", [{"dtype": "f8"}, {"dtype": 3}, {"isq": 4}])
def test_bad_folder_options(hf_folder: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        BackendType.MISTRALRS.create(device="cpu").load_model(hf_folder, **kwargs)


def test_unknown_isq_name(hf_folder: Path) -> None:
    with pytest.raises(InvalidRequestError, match="isq"):
        BackendType.MISTRALRS.create(device="cpu").load_model(hf_folder, isq="Q3_NOPE")


def test_dtype_and_isq_are_refused_for_gguf(model_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="SafeTensors"):
        BackendType.MISTRALRS.create(device="cpu").load_model(model_path, isq="Q4K")


def test_tokenizer_option_replaces_the_folders_tokenizer(hf_folder: Path, tmp_path: Path, model_path: Path) -> None:
    own_rome, own_paris = word_ids(Tokenizer.from_gguf(model_path))
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(hf_folder, tokenizer=swapped_tokenizer(model_path, tmp_path), max_context=256)
        assert word_ids(b.tokenizer) == (own_paris, own_rome)  # type: ignore[attr-defined]
