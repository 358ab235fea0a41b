"""How ``load_model`` tells a GGUF file, a SafeTensors folder and a hub repository id apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcai_inference import InvalidRequestError, ModelNotFoundError
from pcai_inference.model_source import ModelFormat, locate_model


def test_local_forms(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert locate_model(gguf).format is ModelFormat.GGUF
    one = tmp_path / "one"
    one.mkdir()
    (one / "a-Q4_K_M.gguf").write_bytes(b"GGUF")
    assert locate_model(one).path == one / "a-Q4_K_M.gguf"
    (one / "a-Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(InvalidRequestError, match=r"2 GGUF files; choose one with filename=: 'a-Q4_K_M\.gguf'"):
        locate_model(one)
    assert locate_model(one, filename="a-Q8_0.gguf").path == one / "a-Q8_0.gguf"
    with pytest.raises(ModelNotFoundError, match=r"no file 'b\.gguf' in"):
        locate_model(one, filename="b.gguf")
    # config.json makes a folder a SafeTensors model, even beside a GGUF file.
    (one / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    assert locate_model(one) == locate_model(str(one)) and locate_model(one).format is ModelFormat.SAFETENSORS


def test_options_that_do_not_apply_to_local_paths(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InvalidRequestError, match="filename= picks a file in a folder or hub repository"):
        locate_model(gguf, filename="x.gguf")
    with pytest.raises(InvalidRequestError, match="revision= applies to hub repositories"):
        locate_model(gguf, revision="main")


@pytest.mark.parametrize("missing", ["/no/such/model.gguf", "./model.gguf", "model.gguf", "a/b/c", "~/x", "../up/x"])
def test_missing_paths_are_not_taken_for_repo_ids(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a hub request would fail otherwise
    with pytest.raises(ModelNotFoundError, match=r"no model at .*check the path, or give a Hugging Face repository id"):
        locate_model(missing)
