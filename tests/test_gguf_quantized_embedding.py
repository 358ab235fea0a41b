"""The token embedding of a GGUF model of another architecture (Llama) stays quantized: a file
written here with a Q8_0 embedding generates the ids of the same model stored with that
embedding in F32, and its load holds no dense F32 copy of the table (engine patch
mistralrs-core 0016)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import HIGH_WATER_KIB, run_python

# A vocabulary big enough that a dense F32 table (128 MiB) stands out from the model's own size.
VOCAB = 65_536
HIDDEN = 512
LAYERS = 2
HEADS = 8
KV_HEADS = 4
FFN = 1024
Q8_0 = gguf.GGMLQuantizationType.Q8_0
PROMPTS = ["hello world", "the quick brown fox", "abc abc abc", "0123456789"]


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


def write_llama(path: Path, embedding_dtype: gguf.GGMLQuantizationType) -> None:
    """A small random Llama GGUF; every matrix Q8_0, the token embedding in `embedding_dtype`
    (F32 holds exactly the values of the Q8_0 table)."""
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


GENERATE = """
import json
from pcai_inference import BackendType

before = high_water_kib()
b = BackendType.MISTRALRS.create(device="cpu")
b.load_model(MODEL)
ids = [list(b.generate(p, max_tokens=12, temperature=0.0).token_ids) for p in PROMPTS]
peak = high_water_kib()
b.unload()
print(json.dumps({"ids": ids, "grown_kib": peak - before}))
"""


def generate(path: Path) -> dict[str, object]:
    proc = run_python(f"MODEL = {str(path)!r}\nPROMPTS = {PROMPTS!r}\n" + HIGH_WATER_KIB + GENERATE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], dict[str, object]]:
    """Generations and load growth of the model with a Q8_0 embedding and with it in F32."""
    d = tmp_path_factory.mktemp("llama")
    quantized, dense = d / "q8_0_embedding.gguf", d / "f32_embedding.gguf"
    write_llama(quantized, Q8_0)
    write_llama(dense, gguf.GGMLQuantizationType.F32)
    return generate(quantized), generate(dense)


def test_a_quantized_embedding_generates_what_its_dense_values_generate(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    quantized, dense = reports
    assert quantized["ids"] == dense["ids"]
    assert all(len(ids) == 12 for ids in quantized["ids"])  # type: ignore[attr-defined]


def test_a_quantized_embedding_is_not_held_as_a_dense_table(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    quantized, dense = reports
    grown_q = int(quantized["grown_kib"]) * 1024  # type: ignore[call-overload]
    grown_d = int(dense["grown_kib"]) * 1024  # type: ignore[call-overload]
    dense_table = VOCAB * HIDDEN * 4
    # The same model, the same runtime: the file with an F32 table holds 128 MiB of it, the one
    # with a Q8_0 table about a quarter of that, unless the engine expands it to F32 as well.
    saved = grown_d - grown_q
    print(f"load grew {grown_q / 2**20:.0f} MiB (Q8_0 table) and {grown_d / 2**20:.0f} MiB (F32 table)")
    assert saved > dense_table // 2
