"""A Hugging Face SafeTensors folder: the Gemma 3 270M weights dequantized to float32
(tests/hf_folder.py), loaded through the engine's SafeTensors loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from hf_folder import write_gemma3_folder
from test_greedy_reference import CASES, assert_parts_only_at_near_ties

from pcai_inference import (
    BackendType,
    InferenceBackend,
    InvalidRequestError,
    ModelFormatError,
)

PROMPT = "The history of the Roman Empire began"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    return write_gemma3_folder(model_path, tmp_path_factory.mktemp("gemma3-hf"))


@pytest.fixture(scope="module")
def folder_backend(folder: Path) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(folder, max_context=1024)
    yield b
    b.unload()


def test_folder_loads_with_its_own_metadata(folder_backend: InferenceBackend, folder: Path) -> None:
    assert folder_backend.is_loaded
    assert folder_backend.model_path == folder.resolve()  # type: ignore[attr-defined]
    assert folder_backend.context_window == 1024  # type: ignore[attr-defined]
    # generation_config.json's end-of-sequence ids, <eos> and <end_of_turn>.
    assert set(folder_backend.tokenizer.eog_ids) >= {1, 106}  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_folder_greedy_parts_from_llama_cpp_only_at_near_ties(
    folder_backend: InferenceBackend, case: dict[str, Any]
) -> None:
    assert folder_backend.tokenize(case["prompt"]) == case["prompt_token_ids"]
    assert_parts_only_at_near_ties(folder_backend, case)


def test_chat_template_comes_from_tokenizer_config(folder_backend: InferenceBackend) -> None:
    r = folder_backend.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
    rendered = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert r.prompt_tokens == len(folder_backend.tokenize(rendered, add_special_tokens=True)) == 10


def test_in_situ_quantization_keeps_the_greedy_text(folder_backend: InferenceBackend, folder: Path) -> None:
    full = folder_backend.generate(PROMPT, max_tokens=16, temperature=0.0)
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(folder, isq="Q8_0", max_context=256)
        q8 = b.generate(PROMPT, max_tokens=16, temperature=0.0)
    assert q8.token_ids == full.token_ids


def _copy_without(folder: Path, dest: Path, *missing: str) -> Path:
    dest.mkdir()
    for f in folder.iterdir():
        if f.name not in missing:
            (dest / f.name).symlink_to(f)
    return dest


@pytest.mark.parametrize(
    ("missing", "named"),
    [("config.json", "config.json"), ("model.safetensors", ".safetensors"), ("tokenizer.json", "tokenizer.json")],
)
def test_incomplete_folder_names_what_is_missing(folder: Path, tmp_path: Path, missing: str, named: str) -> None:
    broken = _copy_without(folder, tmp_path / "broken", missing)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError, match=named.replace(".", r"\.")):
        b.load_model(broken)
    assert not b.is_loaded


def test_config_without_architectures(folder: Path, tmp_path: Path) -> None:
    broken = _copy_without(folder, tmp_path / "broken", "config.json")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="architectures"):
        BackendType.MISTRALRS.create(device="cpu").load_model(broken)


@pytest.mark.parametrize("kwargs", [{"dtype": "f8"}, {"dtype": 3}, {"isq": 4}])
def test_bad_folder_options(folder: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        BackendType.MISTRALRS.create(device="cpu").load_model(folder, **kwargs)


def test_unknown_isq_name(folder: Path) -> None:
    with pytest.raises(InvalidRequestError, match="isq"):
        BackendType.MISTRALRS.create(device="cpu").load_model(folder, isq="Q3_NOPE")


def test_dtype_and_isq_are_refused_for_gguf(model_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="SafeTensors"):
        BackendType.MISTRALRS.create(device="cpu").load_model(model_path, isq="Q4K")


def test_gguf_folder_still_says_to_pass_the_file(model_path: Path, tmp_path: Path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    shutil.copyfile(model_path, d / model_path.name)
    with pytest.raises(ModelFormatError, match="pass the path of one of them"):
        BackendType.MISTRALRS.create(device="cpu").load_model(d)
