"""Float64 forward passes of the llama.cpp graphs of Llama (Mistral), Qwen 2, Qwen 3 and Phi-3 on
a GGUF file's dequantized weights: what a correct engine computes, up to the rounding of its
quantized activations. Written from the architectures' definitions, not from the engine."""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# llama.cpp's rotary embedding per architecture: `norm` rotates adjacent pairs (x[2i], x[2i+1]),
# `neox` the halves (x[i], x[i + d/2]).
ROPE_STYLE = {"llama": "norm", "mistral3": "norm", "qwen2": "neox", "qwen3": "neox", "phi3": "neox"}


class ReferenceModel:
    def __init__(self, path: str) -> None:
        reader = GGUFReader(path)
        fields = reader.fields

        def meta(key: str, default: float | None = None) -> float:
            full = f"{self.arch}.{key}"
            if full not in fields:
                assert default is not None, full
                return default
            return float(fields[full].contents())

        self.arch = str(fields["general.architecture"].contents())
        self.hidden = int(meta("embedding_length"))
        self.layers = int(meta("block_count"))
        self.heads = int(meta("attention.head_count"))
        self.kv_heads = int(meta("attention.head_count_kv"))
        self.head_dim = int(meta("attention.key_length", self.hidden // self.heads))
        self.rope_dims = int(meta("rope.dimension_count", self.head_dim))
        self.rope_base = meta("rope.freq_base", 10_000.0)
        self.eps = meta("attention.layer_norm_rms_epsilon")
        self.weights = {
            t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape(tuple(reversed(t.shape.tolist())))
            for t in reader.tensors
        }

    def w(self, name: str) -> np.ndarray:
        weight: np.ndarray = self.weights[name]
        return weight

    def rms(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        normed: np.ndarray = x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * weight
        return normed

    def rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        d = self.rope_dims
        inv = self.rope_base ** (-np.arange(0, d, 2) / d)
        if "rope_freqs.weight" in self.weights:
            inv = inv / self.weights["rope_freqs.weight"]
        angle = positions[:, None, None] * inv[None, None, :]
        cos, sin = np.cos(angle), np.sin(angle)
        rot, rest = x[..., :d], x[..., d:]
        if ROPE_STYLE[self.arch] == "neox":
            a, b = rot[..., : d // 2], rot[..., d // 2 :]
            turned = np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)
        else:
            a, b = rot[..., 0::2], rot[..., 1::2]
            turned = np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(rot.shape)
        return np.concatenate([turned, rest], -1)

    def attention_inputs(self, h: np.ndarray, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q_rows, kv_rows = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.arch == "phi3":
            qkv = h @ self.w(b + "attn_qkv.weight").T
            q, k, v = np.split(qkv, [q_rows, q_rows + kv_rows], -1)
        else:
            q, k, v = (h @ self.w(b + f"attn_{x}.weight").T for x in "qkv")
            if b + "attn_q.bias" in self.weights:
                q, k, v = (y + self.w(b + f"attn_{x}.bias") for y, x in zip((q, k, v), "qkv", strict=True))
        n = h.shape[0]
        q = q.reshape(n, self.heads, self.head_dim)
        k = k.reshape(n, self.kv_heads, self.head_dim)
        v = v.reshape(n, self.kv_heads, self.head_dim)
        if b + "attn_q_norm.weight" in self.weights:
            q = self.rms(q, self.w(b + "attn_q_norm.weight"))
            k = self.rms(k, self.w(b + "attn_k_norm.weight"))
        return q, k, v

    def feed_forward(self, h: np.ndarray, b: str) -> np.ndarray:
        if self.arch == "phi3":
            gate, up = np.split(h @ self.w(b + "ffn_up.weight").T, 2, -1)
        else:
            gate, up = h @ self.w(b + "ffn_gate.weight").T, h @ self.w(b + "ffn_up.weight").T
        out: np.ndarray = (gate / (1 + np.exp(-gate)) * up) @ self.w(b + "ffn_down.weight").T
        return out

    def log_probs(self, ids: list[int]) -> np.ndarray:
        """Log-probabilities of the next token after each position of `ids` (rows)."""
        n = len(ids)
        positions = np.arange(n, dtype=np.float64)
        x = self.w("token_embd.weight")[ids]
        causal = np.tril(np.ones((n, n), dtype=bool))
        group = self.heads // self.kv_heads
        for i in range(self.layers):
            b = f"blk.{i}."
            q, k, v = self.attention_inputs(self.rms(x, self.w(b + "attn_norm.weight")), b)
            q, k = self.rope(q, positions), self.rope(k, positions)
            k, v = np.repeat(k, group, 1), np.repeat(v, group, 1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.head_dim)
            scores = np.where(causal[None], scores, -np.inf)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out = np.einsum("hqk,khd->qhd", weights, v).reshape(n, -1)
            x = x + out @ self.w(b + "attn_output.weight").T
            x = x + self.feed_forward(self.rms(x, self.w(b + "ffn_norm.weight")), b)
        head = self.weights.get("output.weight", self.w("token_embd.weight"))
        logits = self.rms(x, self.w("output_norm.weight")) @ head.T
        shifted = logits - logits.max(-1, keepdims=True)
        result: np.ndarray = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        return result
