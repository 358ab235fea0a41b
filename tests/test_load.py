"""Loading: the real model, and every wrong thing a user can hand to load_model()."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from pcai_inference import (
    BackendType,
    GenerationError,
    InferenceBackend,
    ModelClosedError,
    ModelFormatError,
    ModelNotFoundError,
    ModelNotLoadedError,
    PcaiError,
)


def test_loaded_model_reports_itself(backend: InferenceBackend, model_path: Path) -> None:
    assert backend.is_loaded
    assert backend.device == "cpu"
    assert backend.model_path == model_path.resolve()  # type: ignore[attr-defined]
    assert backend.context_window >= 2048  # type: ignore[attr-defined]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(ModelNotFoundError) as e:
        b.load_model(missing)
    assert str(missing) in str(e.value)
    assert isinstance(e.value, PcaiError) and isinstance(e.value, FileNotFoundError)


def _load_error(path: Path) -> ModelFormatError:
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError) as e:
        b.load_model(path)
    assert not b.is_loaded
    return e.value


def test_not_a_gguf_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not a model\n" * 10)
    assert "not a GGUF file" in str(_load_error(p))


def test_wrong_magic(tmp_path: Path, model_path: Path) -> None:
    p = tmp_path / "bad-magic.gguf"
    with model_path.open("rb") as src:
        head = bytearray(src.read(1 << 20))
    head[:4] = b"GGML"
    p.write_bytes(bytes(head))
    assert "not a GGUF file" in str(_load_error(p))


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "random.gguf"
    p.write_bytes(os.urandom(1 << 16))
    _load_error(p)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    assert "too short" in str(_load_error(p))


@pytest.mark.parametrize("keep", [8, 1 << 10, 1 << 20, 100 << 20])
def test_truncated_real_model(tmp_path: Path, model_path: Path, keep: int) -> None:
    p = tmp_path / f"truncated-{keep}.gguf"
    with model_path.open("rb") as src, p.open("wb") as dst:
        dst.write(src.read(keep))
    message = str(_load_error(p))
    assert str(p) in message


def test_garbage_after_a_valid_header_start(tmp_path: Path, model_path: Path) -> None:
    p = tmp_path / "garbage.gguf"
    with model_path.open("rb") as src:
        head = src.read(24)
    p.write_bytes(head + os.urandom(1 << 16))
    _load_error(p)


def test_folder_without_model_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("empty")
    assert "no .gguf model file" in str(_load_error(tmp_path))


def test_folder_with_one_gguf_loads_it(tmp_path: Path, model_path: Path) -> None:
    os.symlink(model_path, tmp_path / "model.gguf")
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(tmp_path)
        assert b.model_path == model_path.resolve()  # type: ignore[attr-defined]


def test_generate_without_a_model() -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelNotLoadedError):
        b.generate("hello", max_tokens=2)


def test_unload_then_generate_then_reload(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / model_path.name
    copy.parent.mkdir()
    shutil.copyfile(model_path, copy)
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(copy)
        first = b.generate("Hello", max_tokens=4, temperature=0.0).text
        b.unload()
        assert not b.is_loaded
        with pytest.raises(ModelNotLoadedError):
            b.generate("Hello", max_tokens=4)
        with pytest.raises(ModelNotLoadedError):
            b.tokenize("Hello")
        b.load_model(copy)
        assert b.generate("Hello", max_tokens=4, temperature=0.0).text == first
    assert not b.is_loaded


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task")
def test_loading_and_unloading_leaves_no_threads_behind(model_path: Path) -> None:
    """Each loaded model has an engine thread heading a pool of compute threads (engine patch
    0010) and a throughput-logging thread; unloading ends them all, however many times a model
    is loaded. Without engine patch 0011 the logging thread outlived its engine."""

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    def cycle(b: InferenceBackend) -> None:
        b.load_model(model_path)
        assert b.generate("Hello", max_tokens=4, temperature=0.0).tokens_generated == 4
        b.unload()

    def settled() -> int:
        """The thread count once it stops changing (engine threads end just after unload)."""
        count, deadline = threads(), time.monotonic() + 10.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            count, before = threads(), count
            if count == before:
                break
        return count

    with BackendType.MISTRALRS.create(device="cpu") as b:
        cycle(b)  # threads that live for the whole process (global pools, runtimes) now exist
        baseline = settled()
        b.load_model(model_path)
        assert threads() > baseline  # a loaded model has threads of its own
        b.unload()
        for _ in range(3):
            cycle(b)
        assert settled() <= baseline


def test_unloading_during_a_generation_ends_it_with_model_closed_error(model_path: Path) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path)
    stream = b.generate_stream("Once upon a time", max_tokens=5000, temperature=0.0)
    next(stream)
    b.unload()
    with pytest.raises(ModelClosedError, match="unloaded while this generation ran; load it again"):
        for _ in stream:
            pass
    # Still a GenerationError for code written before ModelClosedError existed.
    assert issubclass(ModelClosedError, GenerationError)


def test_max_context_caps_requests_and_keeps_greedy_output(backend: InferenceBackend, model_path: Path) -> None:
    """A 256-token window (llama.cpp's n_ctx) refuses longer requests; within it, the output is
    the full-window model's, token for token."""
    from pcai_inference import InvalidRequestError

    expected = backend.generate("The history of the Roman Empire began", max_tokens=24, temperature=0.0)
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(model_path, max_context=256)
        assert b.context_window == 256  # type: ignore[attr-defined]
        got = b.generate("The history of the Roman Empire began", max_tokens=24, temperature=0.0)
        assert got.token_ids == expected.token_ids
        with pytest.raises(InvalidRequestError, match="256"):
            b.generate("word " * 300, max_tokens=4)
        # Generation stops where the window ends, as with llama.cpp's n_ctx.
        long = b.generate("Hello", max_tokens=300, temperature=0.0, logit_bias={1: float("-inf"), 106: float("-inf")})
        assert long.prompt_tokens + long.tokens_generated == 256
        assert long.finish_reason == "length"


@pytest.mark.parametrize("bad", [0, -5, 2.5, "1024", True])
def test_max_context_must_be_a_positive_int(model_path: Path, bad: object) -> None:
    from pcai_inference import InvalidRequestError

    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(InvalidRequestError, match="max_context"):
        b.load_model(model_path, max_context=bad)  # type: ignore[arg-type]
    assert not b.is_loaded
