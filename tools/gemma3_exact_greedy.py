"""Float64 reference of Gemma 3 on a GGUF file's dequantized weights, for parity studies.

Runs greedy decoding with exact arithmetic (no activation quantization, float64 KV cache) and
compares it with llama.cpp's reference continuations in ``../shared/reference``. This is how
the parity numbers in the issue-3 notes were measured:

    python tools/gemma3_exact_greedy.py MODEL.gguf ../shared/reference/gemma3-270m-greedy.json

Needs ``gguf`` and ``numpy``. Takes about a minute on two cores for the 270M model.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

EPS = 1e-6


class Float64Tensors:
    """A GGUF file's tensors, each dequantized to float64 on first use."""

    def __init__(self, reader: GGUFReader) -> None:
        self.tensors = {t.name: t for t in reader.tensors}
        self._cache: dict[str, np.ndarray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            t = self.tensors[name]
            self._cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64)
        return self._cache[name]


def cached_keys_values(kv: dict[int, Any], layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer's keys and values so far, `k` and `v` appended to those cached in `kv`."""
    old_k, old_v = kv.get(layer, (k[:0], v[:0]))
    keys, values = np.concatenate([old_k, k]), np.concatenate([old_v, v])
    kv[layer] = (keys, values)
    return keys, values


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax attention of each query head (q: positions x heads x head_dim) on its group's
    key/value head, where `mask` (query x key positions) allows."""
    n, heads, head_dim = q.shape
    group = heads // keys.shape[1]
    out = np.zeros((n, heads, head_dim))
    for hh in range(heads):
        s = q[:, hh, :] @ keys[:, hh // group, :].T / np.sqrt(head_dim)
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        out[:, hh, :] = (s / s.sum(-1, keepdims=True)) @ values[:, hh // group, :]
    return out


class ExactGemma3:
    def __init__(self, path: str) -> None:
        reader = GGUFReader(path)
        self.w = Float64Tensors(reader)
        field = reader.fields
        self.hidden = int(field["gemma3.embedding_length"].contents())
        self.heads = int(field["gemma3.attention.head_count"].contents())
        self.head_dim = int(field["gemma3.attention.key_length"].contents())
        self.layers = int(field["gemma3.block_count"].contents())
        self.window = int(field["gemma3.attention.sliding_window"].contents())
        self.global_base = float(field["gemma3.rope.freq_base"].contents())

    @staticmethod
    def rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        # llama.cpp stores Gemma's norm weights as 1 + w already.
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * w

    def rope(self, x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
        half = self.head_dim // 2
        inv = base ** (-np.arange(half) * 2.0 / self.head_dim)
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    def step(self, ids: list[int], start: int, kv: dict[int, Any]) -> np.ndarray:
        embed = self.w("token_embd.weight")
        x = embed[ids] * np.sqrt(self.hidden)
        n = len(ids)
        qpos = np.arange(start, start + n)
        for i in range(self.layers):
            b = f"blk.{i}."
            h = self.rms(x, self.w(b + "attn_norm.weight"))
            q = (h @ self.w(b + "attn_q.weight").T).reshape(n, self.heads, self.head_dim)
            k = (h @ self.w(b + "attn_k.weight").T).reshape(n, -1, self.head_dim)
            v = (h @ self.w(b + "attn_v.weight").T).reshape(n, -1, self.head_dim)
            q = self.rms(q, self.w(b + "attn_q_norm.weight"))
            k = self.rms(k, self.w(b + "attn_k_norm.weight"))
            is_global = (i + 1) % 6 == 0
            base = self.global_base if is_global else 10000.0
            q, k = self.rope(q, qpos.astype(np.float64), base), self.rope(k, qpos.astype(np.float64), base)
            keys, values = cached_keys_values(kv, i, k, v)
            kpos = np.arange(keys.shape[0])
            mask = kpos[None, :] <= qpos[:, None]
            if not is_global:
                mask &= (qpos[:, None] - kpos[None, :]) < self.window
            out = attention(q, keys, values, mask)
            o = out.reshape(n, -1) @ self.w(b + "attn_output.weight").T
            x = x + self.rms(o, self.w(b + "post_attention_norm.weight"))
            h = self.rms(x, self.w(b + "ffn_norm.weight"))
            gate = h @ self.w(b + "ffn_gate.weight").T
            gelu = 0.5 * gate * (1 + np.tanh(np.sqrt(2 / np.pi) * (gate + 0.044715 * gate**3)))
            d = (gelu * (h @ self.w(b + "ffn_up.weight").T)) @ self.w(b + "ffn_down.weight").T
            x = x + self.rms(d, self.w(b + "post_ffw_norm.weight"))
        x = self.rms(x[-1:], self.w("output_norm.weight"))
        return np.asarray((x @ embed.T)[0])

    def greedy(self, prompt_ids: list[int], n: int) -> list[int]:
        kv: dict[int, Any] = {}
        logits = self.step(prompt_ids, 0, kv)
        out: list[int] = []
        for t in range(n):
            out.append(int(np.argmax(logits)))
            logits = self.step([out[-1]], len(prompt_ids) + t, kv)
        return out


def main() -> None:
    model = ExactGemma3(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        reference = json.load(f)
    for case in reference["cases"]:
        ids = model.greedy(case["prompt_token_ids"], len(case["continuation_token_ids"]))
        ref = case["continuation_token_ids"]
        n = next((i for i, (a, b) in enumerate(zip(ids, ref, strict=False)) if a != b), len(ref))
        margin = case["top1_top2_logit_margin"][n] if n < len(ref) else None
        print(f"{case['id']}: exact float64 matches llama.cpp for {n} tokens; reference margin there: {margin}")


if __name__ == "__main__":
    main()
