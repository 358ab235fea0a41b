"""Our GGUF tokenizer conversion for the other tokenizer kinds, on small GGUF files written here.

- SentencePiece-BPE (``tokenizer.ggml.model = "llama"``, like Llama 2 / Mistral): the reference
  is sentencepiece itself, on a model trained here with byte fallback and a dummy prefix.
- Byte-level BPE (``"gpt2"``, like Llama 3 / Qwen 2): the reference is the ``tokenizers``
  library with the same vocabulary, merges and pre-tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
from tiny_gguf import (
    CONTROL,
    NORMAL,
    QWEN2_SPLIT,
    TRICKY_TEXTS,
    Vocabulary,
    bpe_merges,
    byte_level_pre_tokenizer,
    sentencepiece_pieces,
    train_byte_level_bpe,
    train_sentencepiece,
    write_vocabulary_file,
)
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models

from pcai_inference import InferenceBackend, ModelFormatError, ModelNotFoundError, Tokenizer

# Markup, and a text that looks like a special token, besides the shared tricky texts.
TRICKY = [*TRICKY_TEXTS, "<b>bold</b> and <|not special|>"]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "Hello world! Hello there, world. It's a small world after all.",
    "def square(x):\n    return x * x\n\nprint(square(3))",
    "Numbers: 1, 22, 333, 4444, 3.14159 and 2024-11-25.",
    "Café, naïve, façade, Ünïcödé — accents everywhere.",
    "日本語のテキスト。中文的文本。",
    "They're here; we've seen it; I'm sure you'll like it, he'd say.",
    "https://example.com/path?query=value&other=thing",
    "Whitespace   runs\tand\ttabs\nand\nnewlines.",
] * 20


# --- SentencePiece-BPE -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[spm.SentencePieceProcessor, Path]:
    d = tmp_path_factory.mktemp("spm")
    model = train_sentencepiece(d, CORPUS, vocab_size=400, split_digits=False, controls=[])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tokens, scores, types = sentencepiece_pieces(sp)
    vocab = Vocabulary(
        model="llama",
        tokens=tokens,
        types=types,
        scores=scores,
        bos=1,
        eos=2,
        unk=0,
        add_bos=True,
        add_space_prefix=True,
    )
    path = d / "spm-vocab.gguf"
    write_vocabulary_file(path, vocab)
    return sp, path


@pytest.mark.parametrize("text", TRICKY)
def test_sentencepiece_bpe_matches_sentencepiece(spm_model: tuple[spm.SentencePieceProcessor, Path], text: str) -> None:
    sp, path = spm_model
    ours = Tokenizer.from_gguf(path)
    expected = sp.encode(text) if text else []
    assert ours.tokenize(text, add_special_tokens=False) == expected
    assert ours.tokenize(text, add_special_tokens=True) == [1, *expected]
    assert ours.detokenize(expected) == sp.decode(expected)


# --- byte-level BPE --------------------------------------------------------------------------

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_LEVEL_SPECIALS = ["<|begin|>", "<|end|>"]


def _byte_level(split: str, ignore_merges: bool) -> HFTokenizer:
    trained = train_byte_level_bpe(split, CORPUS, vocab_size=500, specials=BYTE_LEVEL_SPECIALS)
    merges = [(left, right) for left, right in (m.split(" ") for m in bpe_merges(trained))]
    tok = HFTokenizer(models.BPE(vocab=trained.get_vocab(), merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = byte_level_pre_tokenizer(split)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(BYTE_LEVEL_SPECIALS)
    return tok


@pytest.fixture(scope="module", params=[("llama-bpe", LLAMA3_SPLIT, True), ("qwen2", QWEN2_SPLIT, False)])
def byte_level(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[HFTokenizer, Path]:
    pre, split, ignore_merges = request.param
    hf = _byte_level(split, ignore_merges)
    vocab = hf.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    types = [CONTROL if t in BYTE_LEVEL_SPECIALS else NORMAL for t in tokens]
    path = tmp_path_factory.mktemp("bpe") / f"{pre}.gguf"
    write_vocabulary_file(
        path,
        Vocabulary(
            model="gpt2",
            pre=pre,
            tokens=tokens,
            types=types,
            merges=bpe_merges(hf),
            bos=vocab["<|begin|>"],
            eos=vocab["<|end|>"],
            add_bos=True,
        ),
    )
    return hf, path


@pytest.mark.parametrize("text", TRICKY)
def test_byte_level_bpe_matches_tokenizers(byte_level: tuple[HFTokenizer, Path], text: str) -> None:
    hf, path = byte_level
    ours = Tokenizer.from_gguf(path)
    expected = hf.encode(text, add_special_tokens=False).ids
    assert ours.tokenize(text, add_special_tokens=False) == expected
    assert ours.tokenize(text, add_special_tokens=True) == [ours.bos_id, *expected]
    assert ours.detokenize(expected) == hf.decode(expected) == text


def test_special_tokens_are_single_tokens(byte_level: tuple[HFTokenizer, Path]) -> None:
    hf, path = byte_level
    ours = Tokenizer.from_gguf(path)
    assert ours.tokenize("<|end|>", add_special_tokens=False, parse_special=True) == [hf.token_to_id("<|end|>")]
    assert hf.token_to_id("<|end|>") in ours.eog_ids


# --- errors ----------------------------------------------------------------------------------


def test_tokenizer_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.gguf"
    odd = Vocabulary(
        model="gpt2",
        pre="no-such-pre",
        tokens=["a", "b", "ab"],
        types=[NORMAL] * 3,
        merges=["a b"],
        bos=0,
        eos=1,
        add_bos=True,
    )
    write_vocabulary_file(path, odd)
    with pytest.raises(ModelFormatError, match="no-such-pre"):
        Tokenizer.from_gguf(path)


def test_gemma_tokenizer_without_the_weights(model_path: Path) -> None:
    tok = Tokenizer.from_gguf(model_path)
    assert tok.tokenize("The history of the Roman Empire began") == [2, 818, 4083, 529, 506, 10995, 23436, 6074]
    assert tok.vocab_size == 262144 and tok.bos_id == 2
    assert {1, 106} <= set(tok.eog_ids)


def test_a_loaded_model_shares_the_standalone_tokenizer(backend: InferenceBackend, model_path: Path) -> None:
    text = "Ünïcödé <b>bold</b>\n\ttabs 🐶"
    standalone = Tokenizer.from_gguf(model_path)
    shared = backend.tokenizer  # type: ignore[attr-defined]
    assert shared.tokenize(text) == standalone.tokenize(text) == backend.tokenize(text)
    assert shared.eog_ids == backend._native().eog_ids  # type: ignore[attr-defined]
