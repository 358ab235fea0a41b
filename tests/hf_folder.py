"""Writes the Gemma 3 270M GGUF out as a Hugging Face SafeTensors folder (`Gemma3ForCausalLM`),
with every weight dequantized to float32: the same model in the other format users bring."""

from __future__ import annotations

import json
from pathlib import Path

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
