"""Float64 reference of the Llama architecture on a GGUF file's dequantized weights, for
correctness checks (tests/test_smollm2.py) and parity studies.

Exact arithmetic: no activation quantization, a float64 KV cache. The GGUF's q and k rows are
stored permuted for llama.cpp's "normal" rope (convert_hf_to_gguf.py's ``permute``): the two
halves of each rotated pair are adjacent rows (2i, 2i+1), not (i, i + d/2) as in Hugging Face's
layout; this evaluator rotates those adjacent pairs. Run as a script, it compares its greedy
continuations with llama.cpp's stored ones:

    python tools/llama_exact_greedy.py MODEL.gguf tests/data/smollm2-135m-reference.json

Needs ``gguf`` and ``numpy``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from gemma3_exact_greedy import Float64Tensors, attention, cached_keys_values
from gguf import GGUFReader


class ExactLlama:
    def __init__(self, path: str) -> None:
        reader = GGUFReader(path)
        self.w = Float64Tensors(reader)
        field = reader.fields
        arch = str(field["general.architecture"].contents())
        if arch != "llama":
            raise ValueError(f"{path} is a {arch} model, not llama")

        def meta(key: str) -> Any:
            return field[f"llama.{key}"].contents()

        self.hidden = int(meta("embedding_length"))
        self.heads = int(meta("attention.head_count"))
        self.kv_heads = int(meta("attention.head_count_kv")) if "llama.attention.head_count_kv" in field else self.heads
        self.head_dim = self.hidden // self.heads
        self.rope_dim = int(meta("rope.dimension_count")) if "llama.rope.dimension_count" in field else self.head_dim
        self.layers = int(meta("block_count"))
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.base = float(meta("rope.freq_base")) if "llama.rope.freq_base" in field else 10000.0
        if "llama.rope.scaling.type" in field or "rope_freqs.weight" in self.w:
            raise ValueError("rope scaling is not implemented here")
        self.output = "output.weight" if "output.weight" in self.w else "token_embd.weight"

    def rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """llama.cpp's normal rope: pair (2i, 2i+1) turns by pos * base^(-2i/rope_dim)."""
        inv = self.base ** (-np.arange(0, self.rope_dim, 2) / self.rope_dim)
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        even, odd = x[..., 0 : self.rope_dim : 2], x[..., 1 : self.rope_dim : 2]
        out[..., 0 : self.rope_dim : 2] = even * c - odd * s
        out[..., 1 : self.rope_dim : 2] = odd * c + even * s
        return out

    def step(self, ids: list[int], start: int, kv: dict[int, Any]) -> np.ndarray:
        """Logits after `ids`, which sit at positions start.. of the sequence cached in `kv`."""
        x = self.w("token_embd.weight")[ids]
        n = len(ids)
        qpos = np.arange(start, start + n)
        for i in range(self.layers):
            b = f"blk.{i}."
            h = self.rms(x, self.w(b + "attn_norm.weight"))
            q = (h @ self.w(b + "attn_q.weight").T).reshape(n, self.heads, self.head_dim)
            k = (h @ self.w(b + "attn_k.weight").T).reshape(n, self.kv_heads, self.head_dim)
            v = (h @ self.w(b + "attn_v.weight").T).reshape(n, self.kv_heads, self.head_dim)
            q, k = self.rope(q, qpos.astype(np.float64)), self.rope(k, qpos.astype(np.float64))
            keys, values = cached_keys_values(kv, i, k, v)
            mask = np.arange(keys.shape[0])[None, :] <= qpos[:, None]
            out = attention(q, keys, values, mask)
            x = x + out.reshape(n, -1) @ self.w(b + "attn_output.weight").T
            h = self.rms(x, self.w(b + "ffn_norm.weight"))
            gate = h @ self.w(b + "ffn_gate.weight").T
            silu = gate / (1 + np.exp(-gate))
            x = x + (silu * (h @ self.w(b + "ffn_up.weight").T)) @ self.w(b + "ffn_down.weight").T
        x = self.rms(x[-1:], self.w("output_norm.weight"))
        return np.asarray((x @ self.w(self.output).T)[0])

    def greedy(self, prompt_ids: list[int], n: int, stop: frozenset[int] = frozenset()) -> list[int]:
        kv: dict[int, Any] = {}
        logits = self.step(prompt_ids, 0, kv)
        out: list[int] = []
        for t in range(n):
            out.append(int(np.argmax(logits)))
            if out[-1] in stop:
                break
            logits = self.step([out[-1]], len(prompt_ids) + t, kv)
        return out


def reference_noise(model: ExactLlama, case: dict[str, Any]) -> float:
    """How far llama.cpp's logits part from exact ones on its own greedy path: the largest error,
    over the steps, in the logit difference between the exact best of its top tokens and another."""
    kv: dict[int, Any] = {}
    logits = model.step(case["prompt_token_ids"], 0, kv)
    worst = 0.0
    for t, (token, top) in enumerate(zip(case["continuation_token_ids"], case["top_logits"], strict=True)):
        ref = dict((int(i), float(v)) for i, v in top)
        best = max(ref, key=lambda i: logits[i])
        worst = max(worst, max(abs((ref[best] - ref[i]) - (logits[best] - logits[i])) for i in ref))
        logits = model.step([token], len(case["prompt_token_ids"]) + t, kv)
    return worst


def main() -> None:
    model = ExactLlama(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        reference = json.load(f)
    full = 0
    for case in reference["prompts"]:
        ref = case["continuation_token_ids"]
        stop = frozenset(ref[-1:]) if case.get("stop_reason") == "eog" else frozenset()
        ids = model.greedy(case["prompt_token_ids"], len(ref), stop)
        n = next((i for i, (a, b) in enumerate(zip(ids, ref, strict=False)) if a != b), min(len(ids), len(ref)))
        full += ids == ref
        margin = case["top1_top2_logit_margin"][n] if n < len(ref) else None
        noise = reference_noise(model, case)
        print(
            f"{case['id']}: exact float64 matches llama.cpp for {n}/{len(ref)} tokens (reference margin there: "
            f"{margin}); llama.cpp's logits part from exact ones by up to {noise:.3f} on its path"
        )
    print(f"{full}/{len(reference['prompts'])} continuations equal llama.cpp's")


if __name__ == "__main__":
    main()
