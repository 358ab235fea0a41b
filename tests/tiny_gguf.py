"""Tiny random-weight GGUF models of the architectures the engine's GGUF pipeline runs besides
Gemma 3 (Qwen 2, Qwen 3, Phi-3, Mistral), written with the `gguf` package as llama.cpp's
converter lays them out: its tensor names and metadata keys, fused matrices where it fuses them,
quantized matrices (Q8_0 / Q4_0) with F32 norms and biases, and each family's real tokenizer
layout, trained here on a small corpus so that an independent library can tokenize the same
vocabulary:

- byte-level BPE with merges (``tokenizer.ggml.model = "gpt2"``, ``pre = "qwen2"``), specials
  after the vocabulary and padding entries after those (Qwen 2 and 3; `tokenizers` trains it);
- SentencePiece-BPE with byte fallback (``"llama"``): Phi-3's added chat tokens after the
  SentencePiece pieces, Mistral's control tokens inside them (`sentencepiece` trains it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import sentencepiece as spm
from tokenizers import Regex, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models as hf_models

Q8_0 = gguf.GGMLQuantizationType.Q8_0
Q4_0 = gguf.GGMLQuantizationType.Q4_0

# llama.cpp's `tokenizer.ggml.token_type` values.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Qwen 2's pre-tokenizer split (its tokenizer.json; llama.cpp's "qwen2").
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Texts where tokenizers tend to part ways: whitespace runs, accents, CJK, emoji (with a ZWJ
# sequence), code, numbers, a URL, contractions, case runs, one character and nothing.
TRICKY_TEXTS = [
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
    "it's they're we've I'm you'll he'd",
    "CamelCaseWordsAndUPPERCASE",
    "a",
    "",
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Hello world! Hello there, world. It's a small world after all.",
    "def square(x):\n    return x * x\n\nprint(square(3))",
    "Numbers: 1, 22, 333, 4444, 3.14159 and 2024-11-25.",
    "Café, naïve, façade, Ünïcödé — accents everywhere.",
    "日本語のテキスト。中文的文本。",
    "They're here; we've seen it; I'm sure you'll like it, he'd say.",
    "https://example.com/path?query=value&other=thing",
    "Whitespace   runs\tand\ttabs\nand\nnewlines.",
    "Once upon a time, in a small village, there lived an old baker.",
] * 20

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen 3's thinking markers are added tokens that are not special: user-defined in GGUF.
QWEN3_USER_DEFINED = ["<think>", "</think>"]
# Phi-3's added tokens, after the 32,000 SentencePiece pieces (all special: control in GGUF).
PHI3_ADDED = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
]
# Mistral v0.3's control tokens, pieces 3-9 of its SentencePiece model.
MISTRAL_CONTROLS = [
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
]

# Shortened forms of the families' own templates (the same markup, without tool calls).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer as GGUF metadata, and what it was trained as (the test's reference)."""

    model: str
    tokens: list[str]
    types: list[int]
    eos: int
    add_bos: bool
    bos: int | None = None
    unk: int | None = None
    pre: str | None = None
    merges: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    chat_template: str | None = None
    sentencepiece_model: Path | None = None
    """The SentencePiece model the pieces come from (SentencePiece-BPE vocabularies)."""
    add_space_prefix: bool | None = None


@dataclass(frozen=True)
class Layout:
    """The shapes and the architecture-specific parts of a model, as llama.cpp stores them."""

    arch: str
    quant: gguf.GGMLQuantizationType
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    ffn: int = 128
    rope_base: float = 10_000.0
    eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    fused: bool = False
    """Phi-3: one `attn_qkv` matrix (q, k, v rows) and `ffn_up` holding the gate rows, then up's."""
    tied: bool = False
    """No `output.weight`: the head is the token embedding."""
    context: int = 4096
    rope_dims: int | None = None
    """Rotated dimensions of each head, when not all (Phi-4-mini rotates three quarters)."""
    rope_freqs: bool = False
    """Llama 3.1's `rope_freqs.weight`: a divisor of each rotary frequency."""
    long_rope_factors: bool = False
    """Phi-3.5-mini's `rope_factors_long`/`rope_factors_short` (long-context RoPE scaling)."""


# Weight scales that give varied, fairly confident predictions: layer outputs outweigh the token's
# own embedding in the residual stream (else a tied head predicts the input token again), and
# the final norm and the head spread the logits over a few units.
EMBEDDING_STD = 0.2
OUT_GAIN = 2.0
HEAD_GAIN = 1.5
OUTPUT_NORM = 2.0


def byte_level_vocabulary(user_defined: list[str], chat_template: str) -> Vocabulary:
    """A Qwen-style vocabulary: byte-level BPE trained with Qwen 2's split, then the specials
    (control), the user-defined tokens, and `[PAD{id}]` entries (unused) up to a multiple of 64,
    as llama.cpp's converter pads Qwen's vocabulary to its embedding rows."""
    trained = train_byte_level_bpe(QWEN2_SPLIT, CORPUS, vocab_size=600)
    tokens = [t for t, _ in sorted(trained.get_vocab().items(), key=lambda kv: kv[1])]
    merges = bpe_merges(trained)
    types = [NORMAL] * len(tokens)
    tokens += QWEN_SPECIALS + user_defined
    types += [CONTROL] * len(QWEN_SPECIALS) + [USER_DEFINED] * len(user_defined)
    while len(tokens) % 64:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(UNUSED)
    endoftext = tokens.index("<|endoftext|>")
    return Vocabulary(
        model="gpt2",
        pre="qwen2",
        tokens=tokens,
        types=types,
        merges=merges,
        bos=endoftext,
        eos=tokens.index("<|im_end|>"),
        add_bos=False,
        chat_template=chat_template,
    )


def sentencepiece_vocabulary(
    folder: Path,
    *,
    controls: list[str],
    added: list[str],
    eos: str,
    add_bos: bool,
    chat_template: str,
) -> Vocabulary:
    """A SentencePiece-BPE vocabulary with byte fallback (unknown 0, BOS 1, EOS 2, `controls`
    next, as Mistral's model has them), then `added` control tokens after the pieces (as Phi-3's
    added tokens come), padded with `[PAD{id}]` entries (unused) to a multiple of 64 as llama.cpp's
    converter pads to the embedding rows."""
    model = train_sentencepiece(folder, CORPUS, vocab_size=500, split_digits=True, controls=controls)
    tokens, scores, types = sentencepiece_pieces(spm.SentencePieceProcessor(model_file=str(model)))
    tokens += added
    scores += [0.0] * len(added)
    types += [CONTROL] * len(added)
    while len(tokens) % 64:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(0.0)
        types.append(UNUSED)
    return Vocabulary(
        model="llama",
        tokens=tokens,
        types=types,
        scores=scores,
        bos=1,
        eos=tokens.index(eos),
        unk=0,
        add_bos=add_bos,
        chat_template=chat_template,
        sentencepiece_model=model,
    )


def byte_level_pre_tokenizer(split: str) -> pre_tokenizers.PreTokenizer:
    """A byte-level BPE pre-tokenizer: the family's regex split, then bytes to characters."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_byte_level_bpe(
    split: str, corpus: list[str], vocab_size: int, specials: list[str] | None = None
) -> HFTokenizer:
    """A byte-level BPE trained by `tokenizers` on `corpus`, the `specials` first."""
    tokenizer = HFTokenizer(hf_models.BPE())
    tokenizer.pre_tokenizer = byte_level_pre_tokenizer(split)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials or [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def bpe_merges(tokenizer: HFTokenizer) -> list[str]:
    """A BPE tokenizer's merges as GGUF stores them: "left right"."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def train_sentencepiece(
    folder: Path, corpus: list[str], vocab_size: int, split_digits: bool, controls: list[str]
) -> Path:
    """`folder`/sp.model: SentencePiece-BPE with byte fallback and a dummy prefix, trained on
    `corpus` (unknown 0, BOS 1, EOS 2, `controls` next, no padding piece)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus_file = folder / "corpus.txt"
    corpus_file.write_text("\n".join(corpus), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus_file),
        model_prefix=str(folder / "sp"),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        split_digits=split_digits,
        control_symbols=controls,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    return folder / "sp.model"


def sentencepiece_pieces(sp: spm.SentencePieceProcessor) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece model's pieces, scores and GGUF token types, as llama.cpp's converter
    reads them."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(
            UNKNOWN
            if sp.is_unknown(i)
            else CONTROL
            if sp.is_control(i)
            else BYTE
            if sp.is_byte(i)
            else UNUSED
            if sp.is_unused(i)
            else NORMAL
        )
    return tokens, scores, types


def write_vocabulary_file(path: Path, vocab: Vocabulary) -> None:
    """A GGUF file that holds only a vocabulary (no tensors): enough for a tokenizer."""
    w = gguf.GGUFWriter(str(path), "llama")
    _write_vocabulary(w, vocab)
    _close(w)


def _close(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _write_vocabulary(w: gguf.GGUFWriter, v: Vocabulary) -> None:
    w.add_tokenizer_model(v.model)
    if v.pre is not None:
        w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    if v.scores:
        w.add_token_scores(v.scores)
    if v.merges:
        w.add_token_merges(v.merges)
    if v.bos is not None:
        w.add_bos_token_id(v.bos)
    w.add_eos_token_id(v.eos)
    if v.unk is not None:
        w.add_unk_token_id(v.unk)
    w.add_add_bos_token(v.add_bos)
    w.add_add_eos_token(False)
    if v.chat_template is not None:
        w.add_chat_template(v.chat_template)
    if v.add_space_prefix is not None:
        w.add_add_space_prefix(v.add_space_prefix)


def write_model(path: Path, layout: Layout, vocab: Vocabulary, seed: int = 0) -> None:
    """A random-weight model: matrices in `layout.quant`, norms near 1 and biases in F32."""
    rng = np.random.default_rng(seed)
    lo = layout
    w = gguf.GGUFWriter(str(path), lo.arch)
    w.add_context_length(lo.context)
    w.add_embedding_length(lo.hidden)
    w.add_block_count(lo.layers)
    w.add_feed_forward_length(lo.ffn)
    w.add_head_count(lo.heads)
    w.add_head_count_kv(lo.kv_heads)
    w.add_layer_norm_rms_eps(lo.eps)
    w.add_rope_freq_base(lo.rope_base)
    w.add_rope_dimension_count(lo.rope_dims or lo.head_dim)
    if lo.head_dim * lo.heads != lo.hidden:
        w.add_key_length(lo.head_dim)
        w.add_value_length(lo.head_dim)
    if lo.arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(lo.context)
        w.add_sliding_window(2047)
    _write_vocabulary(w, vocab)

    def matrix(name: str, rows: int, cols: int, scale: float | None = None) -> None:
        std = scale if scale is not None else cols**-0.5
        data = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, lo.quant), raw_dtype=lo.quant)

    def vector(name: str, n: int, around: float, spread: float) -> None:
        w.add_tensor(name, (around + spread * rng.standard_normal(n)).astype(np.float32))

    n_vocab = len(vocab.tokens)
    q_rows, kv_rows = lo.heads * lo.head_dim, lo.kv_heads * lo.head_dim
    matrix("token_embd.weight", n_vocab, lo.hidden, EMBEDDING_STD)
    if lo.rope_freqs:
        # Llama 3.1's factors: 1 for the fast frequencies, up to 8 for the slow ones.
        w.add_tensor("rope_freqs.weight", np.geomspace(1.0, 8.0, (lo.rope_dims or lo.head_dim) // 2).astype(np.float32))
    if lo.long_rope_factors:
        for length in ("long", "short"):
            w.add_tensor(
                f"rope_factors_{length}.weight",
                np.linspace(1.0, 3.0, (lo.rope_dims or lo.head_dim) // 2).astype(np.float32),
            )
    vector("output_norm.weight", lo.hidden, OUTPUT_NORM, 0.2)
    if not lo.tied:
        matrix("output.weight", n_vocab, lo.hidden, HEAD_GAIN * lo.hidden**-0.5)
    for i in range(lo.layers):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", lo.hidden, 1.0, 0.1)
        vector(b + "ffn_norm.weight", lo.hidden, 1.0, 0.1)
        if lo.fused:
            matrix(b + "attn_qkv.weight", q_rows + 2 * kv_rows, lo.hidden)
            matrix(b + "ffn_up.weight", 2 * lo.ffn, lo.hidden)
        else:
            matrix(b + "attn_q.weight", q_rows, lo.hidden)
            matrix(b + "attn_k.weight", kv_rows, lo.hidden)
            matrix(b + "attn_v.weight", kv_rows, lo.hidden)
            matrix(b + "ffn_gate.weight", lo.ffn, lo.hidden)
            matrix(b + "ffn_up.weight", lo.ffn, lo.hidden)
        if lo.qkv_bias:
            vector(b + "attn_q.bias", q_rows, 0.0, 0.5)
            vector(b + "attn_k.bias", kv_rows, 0.0, 0.5)
            vector(b + "attn_v.bias", kv_rows, 0.0, 0.5)
        if lo.qk_norm:
            vector(b + "attn_q_norm.weight", lo.head_dim, 1.0, 0.3)
            vector(b + "attn_k_norm.weight", lo.head_dim, 1.0, 0.3)
        matrix(b + "attn_output.weight", lo.hidden, q_rows, OUT_GAIN * q_rows**-0.5)
        matrix(b + "ffn_down.weight", lo.hidden, lo.ffn, OUT_GAIN * lo.ffn**-0.5)
    _close(w)


@dataclass(frozen=True)
class TinyModel:
    name: str
    path: Path
    layout: Layout
    vocab: Vocabulary


def write_all(folder: Path) -> list[TinyModel]:
    """One model of each family, in `folder`."""
    qwen2_vocab = byte_level_vocabulary([], CHATML_TEMPLATE)
    qwen3_vocab = byte_level_vocabulary(QWEN3_USER_DEFINED, CHATML_TEMPLATE)
    phi3_vocab = sentencepiece_vocabulary(
        folder / "phi3-sp",
        controls=[],
        added=PHI3_ADDED,
        eos="<|endoftext|>",
        add_bos=False,
        chat_template=PHI3_TEMPLATE,
    )
    mistral_vocab = sentencepiece_vocabulary(
        folder / "mistral-sp",
        controls=MISTRAL_CONTROLS,
        added=[],
        eos="</s>",
        add_bos=True,
        chat_template=MISTRAL_TEMPLATE,
    )
    specs = [
        # Qwen 2.5 0.5B: q/k/v biases, a tied head.
        ("qwen2", Layout("qwen2", Q8_0, qkv_bias=True, tied=True, rope_base=1_000_000.0), qwen2_vocab),
        # Qwen 3: q/k norms, heads wider than hidden / heads.
        ("qwen3", Layout("qwen3", Q4_0, head_dim=32, qk_norm=True, rope_base=1_000_000.0), qwen3_vocab),
        # Phi-3 mini: fused matrices, as many key/value heads as query heads.
        ("phi3", Layout("phi3", Q4_0, kv_heads=4, fused=True, eps=1e-5), phi3_vocab),
        # Mistral 7B v0.3: llama.cpp writes it as `llama`.
        ("mistral", Layout("llama", Q8_0, rope_base=1_000_000.0, eps=1e-5), mistral_vocab),
        # Mistral Small 3.1 / Ministral as llama.cpp writes them now: architecture `mistral3`.
        ("mistral3", Layout("mistral3", Q8_0, rope_base=1_000_000.0, eps=1e-5), mistral_vocab),
        # Llama 3.1's layout: a factor per rotary frequency (`rope_freqs.weight`); on the
        # byte-level vocabulary (Llama 3's is one too).
        ("llama3", Layout("llama", Q8_0, rope_base=500_000.0, eps=1e-5, rope_freqs=True), qwen2_vocab),
        # Phi-4: architecture `phi3`, RoPE base 250,000, grouped key/value heads.
        ("phi4", Layout("phi3", Q4_0, fused=True, eps=1e-5, rope_base=250_000.0), phi3_vocab),
    ]
    models = []
    for seed, (name, layout, vocab) in enumerate(specs):
        path = folder / f"tiny-{name}.gguf"
        write_model(path, layout, vocab, seed)
        models.append(TinyModel(name, path, layout, vocab))
    return models
