"""Writes the Gemma 3 270M GGUF out as a Hugging Face SafeTensors folder (`Gemma3ForCausalLM`),
with every weight dequantized to float32: the same model in the other format users bring."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

from pcai_inference import Tokenizer

LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# llama.cpp stores Gemma's RMSNorm weights as 1 + w; Hugging Face stores w.
LAYER_NORMS = {
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def write_gemma3_folder(gguf_path: Path, out: Path) -> Path:
    reader = GGUFReader(gguf_path)

    def meta(key: str) -> float:
        field = reader.fields[key]
        return float(field.parts[field.data[0]][0])

    def weight(name: str) -> np.ndarray:
        t = next(t for t in reader.tensors if t.name == name)
        return np.ascontiguousarray(dequantize(t.data, t.tensor_type).astype(np.float32))

    layers = int(meta("gemma3.block_count"))
    tensors = {
        "model.embed_tokens.weight": weight("token_embd.weight"),
        "model.norm.weight": weight("output_norm.weight") - 1.0,
    }
    for i in range(layers):
        for g, h in LAYER_TENSORS.items():
            tensors[f"model.layers.{i}.{h}.weight"] = weight(f"blk.{i}.{g}.weight")
        for g, h in LAYER_NORMS.items():
            tensors[f"model.layers.{i}.{h}.weight"] = weight(f"blk.{i}.{g}.weight") - 1.0
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    heads = int(meta("gemma3.attention.head_count"))
    config = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": int(meta("gemma3.embedding_length")),
        "intermediate_size": int(meta("gemma3.feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta("gemma3.attention.head_count_kv")),
        "head_dim": int(meta("gemma3.attention.key_length")),
        "rms_norm_eps": meta("gemma3.attention.layer_norm_rms_epsilon"),
        "rope_theta": meta("gemma3.rope.freq_base"),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "sliding_window": int(meta("gemma3.attention.sliding_window")),
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": 256,
        "max_position_embeddings": int(meta("gemma3.context_length")),
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
        "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh",
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "attention_bias": False,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106]}))
    Tokenizer.from_gguf(gguf_path).save(out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )
    return out


def _test_model_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcai-inference" / "test-models"


def _fingerprint(gguf_path: Path, *sources: Path) -> str:
    """sha256 of the GGUF file and of the code that derives something from it."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    with open(gguf_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def cached_gemma3_folder(gguf_path: Path) -> Path:
    """The folder of :func:`write_gemma3_folder`, kept between test runs in the user's cache
    (``$XDG_CACHE_HOME/pcai-inference/test-models``), keyed by the GGUF's sha256 and this
    module's own text (a change to the conversion writes a new folder)."""
    cache = _test_model_cache()
    folder = cache / f"gemma3-270m-f32-hf-{_fingerprint(gguf_path, Path(__file__))}"
    if (folder / "config.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    for stale in [*cache.glob("gemma3-270m-f32-hf-*"), *cache.glob(".writing-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=".writing-", dir=cache))
    write_gemma3_folder(gguf_path, partial)
    partial.rename(folder)
    return folder


def cached_exact_continuations(gguf_path: Path, cases: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Greedy continuations (32 ids per case) of ``tools/gemma3_exact_greedy.py``: Gemma 3 in
    float64 on the GGUF's dequantized weights, with no activation quantization. About a minute
    to compute; cached like :func:`cached_gemma3_folder`."""
    tool = Path(__file__).resolve().parents[1] / "tools" / "gemma3_exact_greedy.py"
    cache = _test_model_cache()
    path = cache / f"gemma3-270m-exact-greedy-{_fingerprint(gguf_path, tool)}.json"
    try:
        stored: dict[str, list[int]] = json.loads(path.read_text())
        if all(c["id"] in stored for c in cases):
            return stored
    except (OSError, ValueError):
        pass
    spec = importlib.util.spec_from_file_location("gemma3_exact_greedy", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ExactGemma3(str(gguf_path))
    result = {c["id"]: [int(i) for i in model.greedy(c["prompt_token_ids"], 32)] for c in cases}
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result
