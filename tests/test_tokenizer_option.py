"""``tokenizer=``: a tokenizer.json that replaces the model's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcai_inference import BackendType, ModelFormatError, ModelNotFoundError, Tokenizer

SWAPPED = ("Rome", "Paris")


def swapped_tokenizer(model_path: Path, out_dir: Path) -> Path:
    """The model's tokenizer.json with the ids of two words swapped; returns its path."""
    tokenizer = Tokenizer.from_gguf(model_path)
    (a,), (b,) = (tokenizer.tokenize(word, add_special_tokens=False) for word in SWAPPED)
    data = json.loads(tokenizer.to_json())
    vocab: dict[str, int] = data["model"]["vocab"]
    by_id = {i: token for token, i in vocab.items()}
    vocab[by_id[a]], vocab[by_id[b]] = b, a
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def word_ids(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    first, second = SWAPPED
    return tokenizer.tokenize(first, add_special_tokens=False), tokenizer.tokenize(second, add_special_tokens=False)


def test_tokenizer_file_replaces_the_models(model_path: Path, tmp_path: Path) -> None:
    own_rome, own_paris = word_ids(Tokenizer.from_gguf(model_path))
    path = swapped_tokenizer(model_path, tmp_path / "swapped")
    b = BackendType.MISTRALRS.create(device="cpu")
    for given in (path, path.parent):  # the file, or a folder holding tokenizer.json
        b.load_model(model_path, tokenizer=given)
        assert word_ids(b.tokenizer) == (own_paris, own_rome)
        assert b.detokenize(own_paris) == SWAPPED[0]
        # BOS still comes first: the GGUF's rule.
        assert b.tokenize(SWAPPED[0])[1:] == own_paris
        assert b.generate(SWAPPED[0], max_tokens=2, temperature=0.0).prompt_tokens == 2
    b.unload()


def test_bad_tokenizer_options(model_path: Path, tmp_path: Path) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"tokenizer file .*missing.json does not exist"):
        b.load_model(model_path, tokenizer=tmp_path / "missing.json")
    not_a_tokenizer = tmp_path / "config.json"
    not_a_tokenizer.write_text('{"architectures": ["Gemma3ForCausalLM"]}')
    with pytest.raises(ModelFormatError, match=r"is not a Hugging Face tokenizer.json"):
        b.load_model(model_path, tokenizer=not_a_tokenizer)
    assert not b.is_loaded
