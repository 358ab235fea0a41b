"""Models from a Hugging Face hub: the loopback hub of tests/hub_server.py stands in for it.

Every test gets an empty ``HF_HOME`` and ``HF_ENDPOINT`` pointing at the loopback hub.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from hub_server import FileSource, LoopbackHub
from huggingface_hub import try_to_load_from_cache
from test_greedy_reference import CASES, assert_parts_only_at_near_ties
from test_tokenizer_option import swapped_tokenizer, word_ids
from tiny_vlm import write_gemma3_vlm

from pcai_inference import (
    BackendType,
    DownloadError,
    InferenceBackend,
    InvalidRequestError,
    ModelFormatError,
    ModelNotFoundError,
    Tokenizer,
)

from conftest import PROMPTS, run_python

GGUF_REPO = "pcai-test/gemma-3-270m-GGUF"
GGUF_NAME = "gemma-3-270m-Q4_K_M.gguf"
SECRET = "hf_pcaiTestSecretToken0123456789"
_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
)


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf-home"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, hf_home: Path, model_path: Path) -> Iterator[LoopbackHub]:
    with LoopbackHub() as h:
        h.add_repo(GGUF_REPO, {GGUF_NAME: model_path, "README.md": b"# Gemma 3 270M, Q4_K_M\n"})
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        for name in _ENV:
            monkeypatch.delenv(name, raising=False)
        yield h


def cached_file(hf_home: Path, repo: str, filename: str) -> Path | None:
    """Where huggingface_hub itself finds the file in the cache, if it does."""
    found = try_to_load_from_cache(repo, filename, cache_dir=hf_home / "hub")
    return Path(found) if isinstance(found, str) else None


@pytest.fixture(scope="module")
def local_greedy(model_path: Path) -> list[int]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path)
    ids = list(b.generate(PROMPTS[0], max_tokens=8, temperature=0.0).token_ids)
    b.unload()
    return ids


def greedy(backend: InferenceBackend) -> list[int]:
    return list(backend.generate(PROMPTS[0], max_tokens=8, temperature=0.0).token_ids)


def test_gguf_repo_downloads_into_the_hf_cache_then_loads_offline(
    hub: LoopbackHub, hf_home: Path, local_greedy: list[int], monkeypatch: pytest.MonkeyPatch, model_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(GGUF_REPO, on_progress=lambda done, total: seen.append((done, total)))
    # The only GGUF file of the repository, in the standard cache layout huggingface_hub reads.
    cached = cached_file(hf_home, GGUF_REPO, GGUF_NAME)
    assert cached is not None and cached.stat().st_size == model_path.stat().st_size
    assert b.model_path.resolve() == cached.resolve()  # type: ignore[attr-defined]
    assert greedy(b) == local_greedy
    size = model_path.stat().st_size
    assert seen[-1] == (size, size)
    assert all(d1 <= d2 for (d1, _), (d2, _) in itertools.pairwise(seen))
    assert all(total == size for _, total in seen)
    assert len(hub.downloads(GGUF_NAME)) == 1
    # README.md was not wanted.
    assert not hub.downloads("README.md")
    b.unload()

    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b.load_model(GGUF_REPO, filename=GGUF_NAME)
    assert greedy(b) == local_greedy
    b.unload()


def test_second_load_online_uses_the_cache(hub: LoopbackHub, model_path: Path) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_gguf_hf(GGUF_REPO, GGUF_NAME)  # type: ignore[attr-defined]
    b.load_gguf_hf(GGUF_REPO, GGUF_NAME, revision="main")  # type: ignore[attr-defined]
    assert len(hub.downloads(GGUF_NAME)) == 1
    assert b.is_loaded
    b.unload()


def test_environment_read_at_process_start(hub: LoopbackHub, hf_home: Path, local_greedy: list[int]) -> None:
    """A fresh interpreter with HF_ENDPOINT/HF_HOME set before anything is imported; then the
    command line, offline, with the hub gone."""
    code = f"""
        import json
        from pcai_inference import BackendType
        b = BackendType.MISTRALRS.create(device="cpu")
        b.load_model({GGUF_REPO!r}, filename={GGUF_NAME!r})
        r = b.generate({PROMPTS[0]!r}, max_tokens=8, temperature=0.0)
        print(json.dumps({{"ids": list(r.token_ids), "text": r.text}}))
    """
    first = run_python(code)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout.splitlines()[-1])
    assert out["ids"] == local_greedy
    # Not a terminal: no progress bar on stderr.
    assert "%|" not in first.stderr and "B/s" not in first.stderr
    hub.stop()
    cli = f"""
        import sys
        from pcai_inference.cli import main
        sys.exit(main(["generate", "--model", {GGUF_REPO!r}, "--filename", {GGUF_NAME!r}, "--max-tokens", "8",
                       "--device", "cpu", {PROMPTS[0]!r}]))
    """
    second = run_python(cli, env={"HF_HUB_OFFLINE": "1"})
    assert second.returncode == 0, second.stderr
    assert second.stdout == out["text"] + "\n"


def test_several_gguf_files_need_a_filename(hub: LoopbackHub) -> None:
    hub.add_repo("pcai-test/two-quants", {"m-Q4_K_M.gguf": b"GGUF-a", "m-Q8_0.gguf": b"GGUF-b"})
    with pytest.raises(InvalidRequestError, match=r"2 GGUF files; choose one with filename=.*m-Q4_K_M\.gguf.*m-Q8_0"):
        BackendType.MISTRALRS.create(device="cpu").load_model("pcai-test/two-quants")
    assert not [r for r in hub.requests if "/resolve/" in r.path]


def test_repo_without_a_model(hub: LoopbackHub) -> None:
    hub.add_repo("pcai-test/docs-only", {"README.md": b"nothing here"})
    with pytest.raises(ModelFormatError, match=r"neither a SafeTensors model .* nor a GGUF file; it has: README\.md"):
        BackendType.MISTRALRS.create(device="cpu").load_model("pcai-test/docs-only")


def test_missing_repo_file_and_revision(hub: LoopbackHub) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"'pcai-test/nope' \(revision 'main'\) was not found.*HF_TOKEN"):
        b.load_model("pcai-test/nope")
    not_in_repo = r"file 'other\.gguf' is not in repository .*gemma-3-270m-GGUF.*'main'"
    with pytest.raises(ModelNotFoundError, match=not_in_repo):
        b.load_model(GGUF_REPO, filename="other.gguf")
    with pytest.raises(ModelNotFoundError, match=r"revision 'v9' was not found in 'pcai-test/gemma-3-270m-GGUF'"):
        b.load_model(GGUF_REPO, revision="v9")
    assert not b.is_loaded


def test_private_repo_needs_the_token_and_never_shows_it(
    hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, local_greedy: list[int]
) -> None:
    caplog.set_level(logging.DEBUG)
    private = "pcai-test/private-gemma"
    hub.add_repo(private, {GGUF_NAME: b"GGUF" + bytes(64)}, token=SECRET)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"a token is needed: set HF_TOKEN.*no token is set") as no_token:
        b.load_model(private)
    monkeypatch.setenv("HF_TOKEN", SECRET[:-1] + "X")
    with pytest.raises(ModelNotFoundError, match="A token is set") as wrong_token:
        b.load_model(private)
    for err in (no_token.value, wrong_token.value):
        assert SECRET[:-1] not in str(err)
    # With the right token the file comes (it is no model: the loader says so, naming no token).
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(ModelFormatError) as not_a_model:
        b.load_model(private)
    assert hub.downloads(GGUF_NAME)[-1].authorized
    assert SECRET[:-1] not in str(not_a_model.value)
    assert SECRET[:-1] not in caplog.text


def test_token_file_in_hf_home(hub: LoopbackHub, hf_home: Path) -> None:
    hub.add_repo("pcai-test/private-tokenizer", {"tokenizer.json": b"{}"}, token=SECRET)
    hf_home.mkdir(parents=True)
    (hf_home / "token").write_text(SECRET + "\n")
    # The tokenizer is fetched with the token file's token, then refused as not a tokenizer.
    with pytest.raises(ModelFormatError, match="tokenizer"):
        BackendType.MISTRALRS.create(device="cpu").load_model(
            "pcai-test/gemma-3-270m-GGUF", tokenizer="pcai-test/private-tokenizer"
        )
    assert cached_file(hf_home, "pcai-test/private-tokenizer", "tokenizer.json") is not None


def test_offline_and_not_cached(hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        BackendType.MISTRALRS.create(device="cpu").load_model(GGUF_REPO, filename=GGUF_NAME)
    assert hub.requests == []


def test_unreachable_hub_is_a_download_error(hub: LoopbackHub) -> None:
    hub.stop()
    with pytest.raises(DownloadError):
        BackendType.MISTRALRS.create(device="cpu").load_model(GGUF_REPO, filename=GGUF_NAME)


def test_interrupted_download_is_not_trusted_and_retry_works(
    hub: LoopbackHub, hf_home: Path, local_greedy: list[int]
) -> None:
    hub.cut_download(GGUF_NAME, after_bytes=50_000_000)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(DownloadError, match="503"):
        b.load_model(GGUF_REPO, filename=GGUF_NAME)
    assert cached_file(hf_home, GGUF_REPO, GGUF_NAME) is None
    # The client tried to resume from where the connection dropped (and met the outage).
    first, retry = (r.range for r in hub.downloads(GGUF_NAME))
    assert first is None and retry is not None and 0 < int(retry.removeprefix("bytes=").rstrip("-")) <= 50_000_000
    # Nothing a later load could take for the file: no blob under its sha256 name.
    assert [p.name for p in (hf_home / "hub").rglob("blobs/*") if "." not in p.name] == []
    hub.heal()
    b.load_model(GGUF_REPO, filename=GGUF_NAME)
    assert cached_file(hf_home, GGUF_REPO, GGUF_NAME) is not None
    assert greedy(b) == local_greedy
    b.unload()


def test_corrupt_download_is_removed(hub: LoopbackHub, hf_home: Path, local_greedy: list[int]) -> None:
    hub.corrupt.add(GGUF_NAME)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(DownloadError, match=r"corrupt: its sha256 is .* It was removed; load again"):
        b.load_model(GGUF_REPO, filename=GGUF_NAME)
    assert cached_file(hf_home, GGUF_REPO, GGUF_NAME) is None
    assert not list((hf_home / "hub").rglob("blobs/*"))
    hub.heal()
    b.load_model(GGUF_REPO, filename=GGUF_NAME)
    assert greedy(b) == local_greedy
    b.unload()


def test_tokenizer_from_the_hub(hub: LoopbackHub, tmp_path: Path, model_path: Path) -> None:
    """tokenizer= takes a repository id: its tokenizer.json replaces the model's."""
    own_rome, own_paris = word_ids(Tokenizer.from_gguf(model_path))
    hub.add_repo("pcai-test/swapped-tokenizer", {"tokenizer.json": swapped_tokenizer(model_path, tmp_path)})
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path, tokenizer="pcai-test/swapped-tokenizer")
    assert word_ids(b.tokenizer) == (own_paris, own_rome)
    b.unload()


def test_safetensors_repo(hub: LoopbackHub, hf_home: Path, hf_folder: Path) -> None:
    """A SafeTensors model id: its config, weights and tokenizer files are fetched (not its
    README) and loaded as a folder; the greedy text follows llama.cpp's reference."""
    files: dict[str, FileSource] = {p.name: p for p in hf_folder.iterdir()}
    commit = hub.add_repo("pcai-test/gemma-3-270m", {**files, "README.md": b"# card", "onnx/model.onnx": b"x"})
    seen: list[tuple[int, int]] = []
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model("pcai-test/gemma-3-270m", max_context=256, on_progress=lambda d, t: seen.append((d, t)))
    snapshot = hf_home / "hub" / "models--pcai-test--gemma-3-270m" / "snapshots" / commit
    assert b.model_path.resolve() == snapshot.resolve()  # type: ignore[attr-defined]
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(files)
    total = sum(p.stat().st_size for p in hf_folder.iterdir())
    assert seen[-1] == (total, total)
    assert_parts_only_at_near_ties(b, CASES[0])
    b.unload()


def test_vision_model_from_the_hub(hub: LoopbackHub, tmp_path: Path) -> None:
    """A vision model id: its processor files come along and the model takes images."""
    folder = write_gemma3_vlm(tmp_path / "tiny-vlm")
    hub.add_repo("pcai-test/tiny-gemma3-vlm", {p.name: p for p in folder.iterdir()})
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model("pcai-test/tiny-gemma3-vlm")
    assert b.capabilities == {"text", "image"}  # type: ignore[attr-defined]
    assert {"preprocessor_config.json", "processor_config.json"} <= {p.name for p in b.model_path.iterdir()}  # type: ignore[attr-defined]
    image = np.zeros((64, 64, 3), np.uint8)
    r = b.chat([{"role": "user", "content": [{"type": "image", "image": image}, "What is it?"]}], max_tokens=4)
    assert r.tokens_generated == 4
    b.unload()
