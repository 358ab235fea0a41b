"""Our GGUF tokenizer conversion for the other tokenizer kinds, on small GGUF files written here.

- SentencePiece-BPE (``tokenizer.ggml.model = "llama"``, like Llama 2 / Mistral): the reference
  is sentencepiece itself, on a model trained here with byte fallback and a dummy prefix.
- Byte-level BPE (``"gpt2"``, like Llama 3 / Qwen 2): the reference is the ``tokenizers``
  library with the same vocabulary, merges and pre-tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import sentencepiece as spm
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from pcai_inference import InferenceBackend, ModelFormatError, ModelNotFoundError, Tokenizer

TRICKY = [
    "Hello world",
    " leading space",
    "trailing space ",
    "two  spaces and   three",
    "tabs\tand\t\ttabs",
    "new\nline\n\nand\r\nwindows",
    "   ",
    "Ünïcödé façade — naïve café",
    "日本語のテキストと中文",
    "emoji 🐶🐱 and 👩‍💻",
    "def f(x):\n    return x ** 2  # square",
    "3.14159 and 1,000,000 and 2024-11-25",
    "https://example.com/path?q=1&r=2",
    "<b>bold</b> and <|not special|>",
    "it's they're we've I'm you'll he'd",
    "CamelCaseWordsAndUPPERCASE",
    "a",
    "",
]

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


def _write_gguf(
    path: Path,
    model: str,
    tokens: list[str],
    types: list[int],
    *,
    scores: list[float] | None = None,
    merges: list[str] | None = None,
    pre: str | None = None,
    bos: int,
    eos: int,
    unk: int | None = None,
    add_space_prefix: bool | None = None,
) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if unk is not None:
        w.add_unk_token_id(unk)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# --- SentencePiece-BPE -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[spm.SentencePieceProcessor, Path]:
    d = tmp_path_factory.mktemp("spm")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(d / "sp"),
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_digits=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(d / "sp.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        # llama.cpp's convert script: normal 1, unknown 2, control 3, user-defined 4, unused 5, byte 6
        types.append(
            2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
        )
    path = d / "spm-vocab.gguf"
    _write_gguf(path, "llama", tokens, types, scores=scores, bos=1, eos=2, unk=0, add_space_prefix=True)
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
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(split: str, ignore_merges: bool) -> HFTokenizer:
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer_tok = HFTokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|begin|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainer_tok.train_from_iterator(CORPUS, trainer)
    model = trainer_tok.model
    vocab = trainer_tok.get_vocab()
    merges = [tuple(m) for m in _merges(trainer_tok)]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|begin|>", "<|end|>"])
    del model
    return tok


def _merges(tok: HFTokenizer) -> list[list[str]]:
    import json

    merges = json.loads(tok.to_str())["model"]["merges"]
    return [m.split(" ") if isinstance(m, str) else m for m in merges]


@pytest.fixture(scope="module", params=[("llama-bpe", LLAMA3_SPLIT, True), ("qwen2", QWEN2_SPLIT, False)])
def byte_level(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[HFTokenizer, Path]:
    pre, split, ignore_merges = request.param
    hf = _byte_level(split, ignore_merges)
    vocab = hf.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    types = [3 if t in ("<|begin|>", "<|end|>") else 1 for t in tokens]
    merges = [" ".join(m) for m in _merges(hf)]
    path = tmp_path_factory.mktemp("bpe") / f"{pre}.gguf"
    _write_gguf(path, "gpt2", tokens, types, merges=merges, pre=pre, bos=vocab["<|begin|>"], eos=vocab["<|end|>"])
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
    _write_gguf(path, "gpt2", ["a", "b", "ab"], [1, 1, 1], merges=["a b"], pre="no-such-pre", bos=0, eos=1)
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
