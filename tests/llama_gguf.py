"""A small random Llama GGUF written with the `gguf` package, for tests of other architectures
than the default model's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

# A vocabulary big enough that a dense F32 table (128 MiB) stands out from the model's own size.
VOCAB = 65_536
HIDDEN = 512
LAYERS = 2
HEADS = 8
KV_HEADS = 4
FFN = 1024
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def _tokens() -> tuple[list[str], list[int], list[float]]:
    """A SentencePiece-style vocabulary: unknown, BOS, EOS, the 256 byte tokens, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    pieces += [chr(ord("a") + i % 26) + chr(ord("a") + i // 26 % 26) for i in range(676)]
    while len(tokens) + len(pieces) < VOCAB:
        pieces.append(f"\u2581w{len(pieces)}")
    tokens += pieces[: VOCAB - len(tokens)]
    types += [1] * (VOCAB - len(types))
    scores = [0.0] * 259 + [-float(i) for i in range(VOCAB - 259)]
    return tokens, types, scores


def write_llama(
    path: Path,
    embedding_dtype: gguf.GGMLQuantizationType = Q8_0,
    vocabulary: Callable[[gguf.GGUFWriter], None] | None = None,
) -> None:
    """A small random Llama GGUF; every matrix Q8_0, the token embedding in `embedding_dtype`
    (F32 holds exactly the values of the Q8_0 table). `vocabulary` writes other tokenizer
    metadata than the SentencePiece vocabulary of `VOCAB` tokens (the same number of tokens)."""
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10_000.0)
    if vocabulary is not None:
        vocabulary(w)
    else:
        tokens, types, scores = _tokens()
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)

    def q8(name: str, rows: int, cols: int, scale: float = 0.05) -> None:
        data = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(data, Q8_0), raw_dtype=Q8_0)

    embd = (rng.standard_normal((VOCAB, HIDDEN)) * 0.5).astype(np.float32)
    embd_q = gguf.quants.quantize(embd, Q8_0)
    if embedding_dtype == Q8_0:
        w.add_tensor("token_embd.weight", embd_q, raw_dtype=Q8_0)
    else:
        dense = gguf.quants.dequantize(embd_q, Q8_0).astype(np.float32)
        w.add_tensor("token_embd.weight", dense)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    q8("output.weight", VOCAB, HIDDEN)
    kv = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        q8(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        q8(f"blk.{i}.attn_k.weight", kv, HIDDEN)
        q8(f"blk.{i}.attn_v.weight", kv, HIDDEN)
        q8(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        q8(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        q8(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        q8(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
