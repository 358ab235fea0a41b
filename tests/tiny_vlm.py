"""Tiny random-weight vision-language models, written at test time with numpy, safetensors and
tokenizers (no torch, no hub). Layouts and shapes: ``../shared/notes/tiny-multimodal-models.md``.

The weights are random, so the text is nonsense; what tests can check is that images reach the
model (different images, different output), that the same image in any form gives the same
output, and the prompt arithmetic. The output head keeps only printable ASCII bytes, so the text
is readable and never ends early.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA3_IMAGE_SIZE = 64
GEMMA3_TOKENS_PER_IMAGE = 16
# The image processor turns <start_of_image> into "\n\n" <start_of_image>, 16 soft tokens,
# <end_of_image> "\n\n": with one byte per newline, an image adds 16 + 2 + 4 tokens.
GEMMA3_IMAGE_PROMPT_TOKENS = GEMMA3_TOKENS_PER_IMAGE + 2 + 4

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}<start_of_image>{% elif part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def byte_level_tokenizer(specials: list[str]) -> Tokenizer:
    """Special tokens first (ids 0..k-1), then the 256 byte tokens (id k + byte value), no merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    vocab = {s: i for i, s in enumerate(specials)}
    vocab.update({ch: len(specials) + i for i, ch in enumerate(alphabet)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _byte_of(ch: str) -> int:
    """The byte a ByteLevel alphabet character stands for (GPT-2's bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    if ord(ch) in printable:
        return ord(ch)
    others = [b for b in range(256) if b not in printable]
    return others[ord(ch) - 256]


class _Weights:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, np.ndarray] = {}

    def matrix(self, name: str, rows: int, cols: int) -> None:
        self.tensors[name] = (self.rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vector(self, name: str, n: int, base: float = 0.0, scale: float = 0.1) -> None:
        self.tensors[name] = (base + scale * self.rng.standard_normal(n)).astype(np.float32)

    def array(self, name: str, shape: tuple[int, ...], fan_in: int) -> None:
        self.tensors[name] = (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def write_gemma3_vlm(out: Path, seed: int = 0) -> Path:
    """A ``Gemma3ForConditionalGeneration`` folder: 2 text layers (hidden 64), a 1-layer SigLIP
    tower (hidden 32) on 64x64 images in 8x8 patches, avg-pooled to 16 soft tokens."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(GEMMA3_SPECIALS)
    vocab, hidden, inter, heads, kv_heads, head_dim, layers = tokenizer.get_vocab_size(), 64, 128, 2, 1, 32, 2
    v_hidden, v_inter, patch = 32, 64, 8
    w = _Weights(seed)
    lm = "language_model.model"
    w.matrix(f"{lm}.embed_tokens.weight", vocab, hidden)
    w.vector(f"{lm}.norm.weight", hidden)
    for i in range(layers):
        p = f"{lm}.layers.{i}"
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm"):
            w.vector(f"{p}.{norm}.weight", hidden)
        w.vector(f"{p}.post_feedforward_layernorm.weight", hidden)
        w.matrix(f"{p}.self_attn.q_proj.weight", heads * head_dim, hidden)
        w.matrix(f"{p}.self_attn.k_proj.weight", kv_heads * head_dim, hidden)
        w.matrix(f"{p}.self_attn.v_proj.weight", kv_heads * head_dim, hidden)
        w.matrix(f"{p}.self_attn.o_proj.weight", hidden, heads * head_dim)
        w.vector(f"{p}.self_attn.q_norm.weight", head_dim)
        w.vector(f"{p}.self_attn.k_norm.weight", head_dim)
        w.matrix(f"{p}.mlp.gate_proj.weight", inter, hidden)
        w.matrix(f"{p}.mlp.up_proj.weight", inter, hidden)
        w.matrix(f"{p}.mlp.down_proj.weight", hidden, inter)
    _printable_head(w, "language_model.lm_head.weight", vocab, hidden, len(GEMMA3_SPECIALS))
    w.tensors["multi_modal_projector.mm_input_projection_weight"] = (
        w.rng.standard_normal((v_hidden, hidden)) / np.sqrt(v_hidden)
    ).astype(np.float32)
    w.vector("multi_modal_projector.mm_soft_emb_norm.weight", v_hidden)
    _siglip_tower(w, "vision_tower.vision_model", v_hidden, v_inter, patch, GEMMA3_IMAGE_SIZE)

    ids = {s: i for i, s in enumerate(GEMMA3_SPECIALS)}
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "image_token_index": ids["<image_soft_token>"],
        "boi_token_index": ids["<start_of_image>"],
        "eoi_token_index": ids["<end_of_image>"],
        "mm_tokens_per_image": GEMMA3_TOKENS_PER_IMAGE,
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "vocab_size": vocab,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
            "query_pre_attn_scalar": head_dim,
            "max_position_embeddings": 1024,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": False,
            "attn_logit_softcapping": None,
            "final_logit_softcapping": None,
        },
        "vision_config": {
            **_vit_config("siglip_vision_model", v_hidden, v_inter, GEMMA3_IMAGE_SIZE, patch),
            "vision_use_head": False,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    files = {
        "config.json": config,
        "generation_config.json": {"bos_token_id": 2, "eos_token_id": [1, 5]},
        "processor_config.json": {"image_seq_length": GEMMA3_TOKENS_PER_IMAGE, "processor_class": "Gemma3Processor"},
        "preprocessor_config.json": {
            "image_processor_type": "Gemma3ImageProcessor",
            "processor_class": "Gemma3Processor",
            "do_convert_rgb": None,
            "do_normalize": True,
            "do_pan_and_scan": None,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "image_seq_length": GEMMA3_TOKENS_PER_IMAGE,
            "resample": 2,
            "rescale_factor": 1 / 255,
            "size": {"height": GEMMA3_IMAGE_SIZE, "width": GEMMA3_IMAGE_SIZE},
        },
        "tokenizer_config.json": {
            "add_bos_token": True,
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
            "chat_template": GEMMA3_CHAT_TEMPLATE,
        },
    }
    return _save_folder(out, w, tokenizer, files)


QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The processor resizes to multiples of 28 (patch 14 x merge 2) with the pixel count kept
# between these: a 56 x 56 image gives 4 image tokens, 48 x 80 gives 2.
QWEN_MIN_PIXELS = 28 * 28
QWEN_MAX_PIXELS = 56 * 56

QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _printable_head(w: _Weights, name: str, vocab: int, hidden: int, specials: int) -> None:
    w.matrix(name, vocab, hidden)
    keep = np.zeros(vocab, dtype=bool)
    keep[specials + ord(" ") : specials + ord("~") + 1] = True
    w.tensors[name][~keep] = 0.0


def _save_folder(
    out: Path,
    w: _Weights,
    tokenizer: Tokenizer,
    files: Mapping[str, object],
    weights: str = "model.safetensors",
    indented: tuple[str, ...] = ("config.json",),
) -> Path:
    """Writes the weights, ``tokenizer.json`` and the JSON ``files`` into ``out``: those named in
    ``indented`` with indent 1, the others on one line."""
    save_file(w.tensors, str(out / weights), metadata={"format": "pt"})
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=1 if name in indented else None))
    tokenizer.save(str(out / "tokenizer.json"))
    return out


def write_qwen25_vl(out: Path, seed: int = 0) -> Path:
    """A ``Qwen2_5_VLForConditionalGeneration`` folder: 2 text layers (hidden 64, M-RoPE), a
    2-block vision tower (hidden 32; block 1 full attention, block 0 windowed) on 14 px patches,
    2 x 2 patches merged into one image token."""
    return _write_qwen_vl(out, seed, qwen2_5=True)


def write_qwen2_vl(out: Path, seed: int = 0) -> Path:
    """A ``Qwen2VLForConditionalGeneration`` folder: Qwen2.5-VL's text model and geometry, with
    Qwen2-VL's vision blocks (LayerNorm with biases, an fc1/fc2 MLP with QuickGELU, every block
    full attention; `embed_dim` and `mlp_ratio` in `vision_config`)."""
    return _write_qwen_vl(out, seed, qwen2_5=False)


def _write_qwen_vl(out: Path, seed: int, qwen2_5: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(QWEN_SPECIALS)
    vocab, hidden, inter, layers = tokenizer.get_vocab_size(), 64, 128, 2
    heads, kv_heads = LLAMA_HEADS, LLAMA_KV_HEADS
    v_hidden, v_inter, v_heads, patch, temporal, merge = 32, 64, 2, 14, 2, 2
    w = _Weights(seed)
    _llama_decoder(w, "model", vocab, hidden, inter, layers, qkv_bias=True)
    _printable_head(w, "lm_head.weight", vocab, hidden, len(QWEN_SPECIALS))
    w.array("visual.patch_embed.proj.weight", (v_hidden, 3, temporal, patch, patch), 3 * temporal * patch * patch)
    for i in range(2):
        b = f"visual.blocks.{i}"
        for norm in ("norm1", "norm2"):
            w.vector(f"{b}.{norm}.weight", v_hidden, base=1.0)
            if not qwen2_5:  # LayerNorm, not RMSNorm
                w.vector(f"{b}.{norm}.bias", v_hidden)
        w.matrix(f"{b}.attn.qkv.weight", 3 * v_hidden, v_hidden)
        w.vector(f"{b}.attn.qkv.bias", 3 * v_hidden)
        w.matrix(f"{b}.attn.proj.weight", v_hidden, v_hidden)
        w.vector(f"{b}.attn.proj.bias", v_hidden)
        mlp = (("gate_proj", v_inter, v_hidden), ("up_proj", v_inter, v_hidden), ("down_proj", v_hidden, v_inter))
        if not qwen2_5:
            mlp = (("fc1", v_inter, v_hidden), ("fc2", v_hidden, v_inter))
        for proj, rows, cols in mlp:
            w.matrix(f"{b}.mlp.{proj}.weight", rows, cols)
            w.vector(f"{b}.mlp.{proj}.bias", rows)
    merged = v_hidden * merge * merge
    w.vector("visual.merger.ln_q.weight", v_hidden, base=1.0)
    if not qwen2_5:
        w.vector("visual.merger.ln_q.bias", v_hidden)
    w.matrix("visual.merger.mlp.0.weight", merged, merged)
    w.vector("visual.merger.mlp.0.bias", merged)
    w.matrix("visual.merger.mlp.2.weight", hidden, merged)
    w.vector("visual.merger.mlp.2.bias", hidden)

    ids = {s: i for i, s in enumerate(QWEN_SPECIALS)}
    config = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration" if qwen2_5 else "Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl" if qwen2_5 else "qwen2_vl",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_theta": 1_000_000.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
        "vision_config": {
            "depth": 2,
            "hidden_size": v_hidden,
            "out_hidden_size": hidden,
            "hidden_act": "silu",
            "intermediate_size": v_inter,
            "num_heads": v_heads,
            "in_chans": 3,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        }
        if qwen2_5
        else {
            "depth": 2,
            "embed_dim": v_hidden,
            "hidden_size": hidden,
            "hidden_act": "quick_gelu",
            "mlp_ratio": v_inter / v_hidden,
            "num_heads": v_heads,
            "in_chans": 3,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
        },
    }
    files = {
        "config.json": config,
        "generation_config.json": {"eos_token_id": [ids["<|im_end|>"]]},
        "preprocessor_config.json": {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor" if qwen2_5 else "Qwen2VLProcessor",
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "rescale_factor": 1 / 255,
            "min_pixels": QWEN_MIN_PIXELS,
            "max_pixels": QWEN_MAX_PIXELS,
            "size": {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
            "patch_size": patch,
            "temporal_patch_size": temporal,
            "merge_size": merge,
        },
        "tokenizer_config.json": {
            "add_bos_token": False,
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": QWEN_CHAT_TEMPLATE,
        },
    }
    return _save_folder(out, w, tokenizer, files)


def qwen_image_tokens(height: int, width: int) -> int:
    """Image tokens the Qwen2-VL processor gives an image: its ``smart_resize`` to multiples of
    28 within the pixel bounds, one token per 2 x 2 patches, plus <|vision_start|>/<|vision_end|>."""
    factor = 28
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > QWEN_MAX_PIXELS:
        beta = ((height * width) / QWEN_MAX_PIXELS) ** 0.5
        h, w = int(height / beta // factor) * factor, int(width / beta // factor) * factor
    elif h * w < QWEN_MIN_PIXELS:
        beta = (QWEN_MIN_PIXELS / (height * width)) ** 0.5
        h, w = -(-int(height * beta) // factor) * factor, -(-int(width * beta) // factor) * factor
    return (h // 14) * (w // 14) // 4 + 2


VOXTRAL_SPECIALS = ["<unk>", "<s>", "</s>", *(f"<SPECIAL_{i}>" for i in range(3, 32)), "[STREAMING_PAD]"]
VOXTRAL_SAMPLE_RATE = 16_000
VOXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST]"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'text' %}{{ part.text }}{% endif %}{% endfor %}{% endif %}[/INST]"
    "{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"
)


def write_voxtral(out: Path, seed: int = 0) -> Path:
    """A Mistral-native Voxtral (realtime) folder: ``params.json`` and
    ``consolidated.safetensors``; a 1-layer Whisper-style encoder (dim 32, 128 mel bins at
    16 kHz) whose frames, 4 at a time, are projected into a 2-layer decoder (dim 64)."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(VOXTRAL_SPECIALS)
    vocab, dim, hidden, heads, kv_heads, head_dim, layers = tokenizer.get_vocab_size(), 64, 128, 2, 1, 32, 2
    e_dim, e_hidden, e_heads, e_head_dim, mels, down = 32, 64, 2, 16, 128, 4
    w = _Weights(seed)
    mm = "mm_streams_embeddings.embedding_module"
    w.matrix(f"{mm}.tok_embeddings.weight", vocab, dim)
    enc = f"{mm}.whisper_encoder"
    w.array(f"{enc}.conv_layers.0.conv.weight", (e_dim, mels, 3), mels * 3)
    w.vector(f"{enc}.conv_layers.0.conv.bias", e_dim)
    w.array(f"{enc}.conv_layers.1.conv.weight", (e_dim, e_dim, 3), e_dim * 3)
    w.vector(f"{enc}.conv_layers.1.conv.bias", e_dim)
    el = f"{enc}.transformer.layers.0"
    for proj in ("wq", "wk", "wv", "wo"):
        w.matrix(f"{el}.attention.{proj}.weight", e_dim, e_dim)
        if proj != "wk":
            w.vector(f"{el}.attention.{proj}.bias", e_dim)
    w.matrix(f"{el}.feed_forward.w1.weight", e_hidden, e_dim)
    w.matrix(f"{el}.feed_forward.w2.weight", e_dim, e_hidden)
    w.vector(f"{el}.feed_forward.w2.bias", e_dim)
    w.matrix(f"{el}.feed_forward.w3.weight", e_hidden, e_dim)
    w.vector(f"{el}.attention_norm.weight", e_dim, base=1.0)
    w.vector(f"{el}.ffn_norm.weight", e_dim, base=1.0)
    w.vector(f"{enc}.transformer.norm.weight", e_dim, base=1.0)
    w.matrix(f"{mm}.audio_language_projection.0.weight", dim, e_dim * down)
    w.matrix(f"{mm}.audio_language_projection.2.weight", dim, dim)
    # Louder audio features, so that they outweigh the padding token's embedding.
    w.tensors[f"{mm}.audio_language_projection.2.weight"] *= 4
    for i in range(layers):
        p = f"layers.{i}"
        w.matrix(f"{p}.attention.wq.weight", heads * head_dim, dim)
        w.matrix(f"{p}.attention.wk.weight", kv_heads * head_dim, dim)
        w.matrix(f"{p}.attention.wv.weight", kv_heads * head_dim, dim)
        w.matrix(f"{p}.attention.wo.weight", dim, heads * head_dim)
        w.matrix(f"{p}.feed_forward.w1.weight", hidden, dim)
        w.matrix(f"{p}.feed_forward.w2.weight", dim, hidden)
        w.matrix(f"{p}.feed_forward.w3.weight", hidden, dim)
        w.vector(f"{p}.attention_norm.weight", dim, base=1.0)
        w.vector(f"{p}.ffn_norm.weight", dim, base=1.0)
    w.vector("norm.weight", dim, base=1.0)
    _printable_head(w, "output.weight", vocab, dim, len(VOXTRAL_SPECIALS))
    params = {
        "dim": dim,
        "n_layers": layers,
        "head_dim": head_dim,
        "hidden_dim": hidden,
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "use_biases": False,
        "rope_theta": 1_000_000.0,
        "norm_eps": 1e-5,
        "vocab_size": vocab,
        "tied_embeddings": False,
        "sliding_window": None,
        "model_max_length": 1024,
        "ada_rms_norm_t_cond": False,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {
                        "sampling_rate": VOXTRAL_SAMPLE_RATE,
                        "frame_rate": 12.5,
                        "num_mel_bins": mels,
                        "hop_length": 160,
                        "window_size": 400,
                        "global_log_mel_max": 1.5,
                    },
                    "dim": e_dim,
                    "n_layers": 1,
                    "head_dim": e_head_dim,
                    "hidden_dim": e_hidden,
                    "n_heads": e_heads,
                    "n_kv_heads": e_heads,
                    "use_biases": True,
                    "causal": True,
                    "rope_theta": 1_000_000.0,
                    "norm_eps": 1e-5,
                    "sliding_window": None,
                },
                "downsample_args": {"downsample_factor": down},
            }
        },
    }
    files = {
        "params.json": params,
        "tokenizer_config.json": {"bos_token": "<s>", "eos_token": "</s>", "chat_template": VOXTRAL_CHAT_TEMPLATE},
    }
    return _save_folder(out, w, tokenizer, files, weights="consolidated.safetensors", indented=("params.json",))


# The Llama-style text stacks' attention: 2 query heads and 1 key/value head, of 32 each.
LLAMA_HEADS, LLAMA_KV_HEADS, LLAMA_HEAD_DIM = 2, 1, 32


def _llama_decoder(
    w: _Weights, prefix: str, vocab: int, hidden: int, inter: int, layers: int, qkv_bias: bool = False
) -> None:
    """A Llama/Mistral text stack under ``prefix``: 2 query heads and 1 KV head of 32, biases on
    q/k/v only with ``qkv_bias`` (Qwen 2)."""
    heads, kv_heads, head_dim = LLAMA_HEADS, LLAMA_KV_HEADS, LLAMA_HEAD_DIM
    w.matrix(f"{prefix}.embed_tokens.weight", vocab, hidden)
    w.vector(f"{prefix}.norm.weight", hidden, base=1.0)
    for i in range(layers):
        p = f"{prefix}.layers.{i}"
        w.vector(f"{p}.input_layernorm.weight", hidden, base=1.0)
        w.vector(f"{p}.post_attention_layernorm.weight", hidden, base=1.0)
        for proj, rows in (
            ("q_proj", heads * head_dim),
            ("k_proj", kv_heads * head_dim),
            ("v_proj", kv_heads * head_dim),
        ):
            w.matrix(f"{p}.self_attn.{proj}.weight", rows, hidden)
            if qkv_bias:
                w.vector(f"{p}.self_attn.{proj}.bias", rows)
        w.matrix(f"{p}.self_attn.o_proj.weight", hidden, heads * head_dim)
        w.matrix(f"{p}.mlp.gate_proj.weight", inter, hidden)
        w.matrix(f"{p}.mlp.up_proj.weight", inter, hidden)
        w.matrix(f"{p}.mlp.down_proj.weight", hidden, inter)


def _llama_text_config(vocab: int, hidden: int, inter: int, layers: int) -> dict[str, object]:
    """``text_config`` for ``_llama_decoder``, with the flat ``rope_theta`` the engine requires."""
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": LLAMA_HEADS,
        "num_key_value_heads": LLAMA_KV_HEADS,
        "head_dim": LLAMA_HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10_000.0,
        "tie_word_embeddings": False,
    }


IDEFICS3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)),
]
# SigLIP on 32 x 32 frames in 8 px patches (16 patches), pixel-shuffled 2 x 2 into 4 image tokens.
IDEFICS3_FRAME_SIZE = 32
IDEFICS3_PATCH = 8
IDEFICS3_SCALE_FACTOR = 2
IDEFICS3_IMAGE_SEQ_LEN = (IDEFICS3_FRAME_SIZE // IDEFICS3_PATCH) ** 2 // IDEFICS3_SCALE_FACTOR**2
# Images are first resized to this longest edge, then cut into frames of IDEFICS3_FRAME_SIZE.
IDEFICS3_LONGEST_EDGE = 2 * IDEFICS3_FRAME_SIZE

IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m.role | capitalize }}:"
    "{% if m.content is string %} {{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}<image>{% elif part.type == 'text' %} {{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def write_idefics3(out: Path, seed: int = 0, image_splitting: bool = True) -> Path:
    """An ``Idefics3ForConditionalGeneration`` (SmolVLM) folder: a 2-layer Llama (hidden 64), a
    1-layer SigLIP tower (hidden 32) on 32 x 32 frames and a pixel-shuffle connector giving 4
    tokens a frame. With image splitting (as SmolVLM ships), an image is resized to a longest
    edge of 64 and cut into up to 2 x 2 frames plus a global one."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(IDEFICS3_SPECIALS)
    vocab, hidden, inter, layers = tokenizer.get_vocab_size(), 64, 128, 2
    v_hidden, v_inter = 32, 64
    w = _Weights(seed)
    _llama_decoder(w, "model.text_model", vocab, hidden, inter, layers)
    _printable_head(w, "lm_head.weight", vocab, hidden, len(IDEFICS3_SPECIALS))
    w.matrix("model.connector.modality_projection.proj.weight", hidden, v_hidden * IDEFICS3_SCALE_FACTOR**2)
    _siglip_tower(w, "model.vision_model", v_hidden, v_inter, IDEFICS3_PATCH, IDEFICS3_FRAME_SIZE)

    ids = {s: i for i, s in enumerate(IDEFICS3_SPECIALS)}
    config = {
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": ids["<image>"],
        "scale_factor": IDEFICS3_SCALE_FACTOR,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "text_config": {"model_type": "llama", **_llama_text_config(vocab, hidden, inter, layers)},
        "vision_config": _vit_config("idefics3_vision", v_hidden, v_inter, IDEFICS3_FRAME_SIZE, IDEFICS3_PATCH),
    }
    files = {
        "config.json": config,
        "generation_config.json": {"bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<end_of_utterance>"]},
        "processor_config.json": {"image_seq_len": IDEFICS3_IMAGE_SEQ_LEN, "processor_class": "Idefics3Processor"},
        "preprocessor_config.json": {
            "image_processor_type": "Idefics3ImageProcessor",
            "processor_class": "Idefics3Processor",
            "do_convert_rgb": True,
            "do_image_splitting": image_splitting,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": IDEFICS3_FRAME_SIZE},
            "resample": 1,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": IDEFICS3_LONGEST_EDGE},
        },
        "tokenizer_config.json": {
            "add_bos_token": False,
            "bos_token": "<|im_start|>",
            "eos_token": "<end_of_utterance>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "chat_template": IDEFICS3_CHAT_TEMPLATE,
        },
    }
    return _save_folder(out, w, tokenizer, files)


def _siglip_tower(w: _Weights, prefix: str, hidden: int, inter: int, patch: int, image_size: int) -> None:
    """A 1-layer SigLIP vision model under ``prefix`` (Gemma 3's and Idefics3's towers)."""
    w.array(f"{prefix}.embeddings.patch_embedding.weight", (hidden, 3, patch, patch), 3 * patch * patch)
    w.vector(f"{prefix}.embeddings.patch_embedding.bias", hidden)
    w.matrix(f"{prefix}.embeddings.position_embedding.weight", (image_size // patch) ** 2, hidden)
    _encoder_layer(w, f"{prefix}.encoder.layers.0", hidden, inter)
    w.vector(f"{prefix}.post_layernorm.weight", hidden, base=1.0)
    w.vector(f"{prefix}.post_layernorm.bias", hidden)


def _vit_config(
    model_type: str,
    hidden: int,
    inter: int,
    image_size: int,
    patch: int,
    layers: int = 1,
    act: str = "gelu_pytorch_tanh",
    eps: float = 1e-6,
) -> dict[str, object]:
    """``vision_config`` of a SigLIP / CLIP tower with 2 attention heads, in the keys' usual order."""
    return {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_channels": 3,
        "image_size": image_size,
        "patch_size": patch,
        "hidden_act": act,
        "layer_norm_eps": eps,
    }


def _encoder_layer(w: _Weights, prefix: str, hidden: int, inter: int) -> None:
    """A SigLIP / CLIP encoder layer (the same tensors): LayerNorms, attention and an fc1/fc2 MLP,
    all with biases."""
    for norm in ("layer_norm1", "layer_norm2"):
        w.vector(f"{prefix}.{norm}.weight", hidden, base=1.0)
        w.vector(f"{prefix}.{norm}.bias", hidden)
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        w.matrix(f"{prefix}.self_attn.{proj}.weight", hidden, hidden)
        w.vector(f"{prefix}.self_attn.{proj}.bias", hidden)
    w.matrix(f"{prefix}.mlp.fc1.weight", inter, hidden)
    w.vector(f"{prefix}.mlp.fc1.bias", inter)
    w.matrix(f"{prefix}.mlp.fc2.weight", hidden, inter)
    w.vector(f"{prefix}.mlp.fc2.bias", hidden)


MISTRAL3_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
# Pixtral on images of at most 32 x 32 in 8 px patches, 2 x 2 patches merged into one token.
MISTRAL3_LONGEST_EDGE = 32
MISTRAL3_PATCH = 8
MISTRAL3_MERGE = 2

MISTRAL3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{{ m.content }}</s>{% else %}[INST]"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}[IMG]{% elif part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}[/INST]{% endif %}{% endfor %}"
)


def write_mistral3(out: Path, seed: int = 0) -> Path:
    """A ``Mistral3ForConditionalGeneration`` folder: a 2-layer Mistral (hidden 64), a 1-layer
    Pixtral tower (hidden 32, 2-D RoPE) on images of up to 32 x 32 in 8 px patches, and the
    projector that merges 2 x 2 patches into one image token."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(MISTRAL3_SPECIALS)
    vocab, hidden, inter, layers = tokenizer.get_vocab_size(), 64, 128, 2
    v_hidden, v_inter, patch, merge = 32, 64, MISTRAL3_PATCH, MISTRAL3_MERGE
    w = _Weights(seed)
    _llama_decoder(w, "language_model.model", vocab, hidden, inter, layers)
    _printable_head(w, "language_model.lm_head.weight", vocab, hidden, len(MISTRAL3_SPECIALS))
    vt = "vision_tower"
    w.array(f"{vt}.patch_conv.weight", (v_hidden, 3, patch, patch), 3 * patch * patch)
    w.vector(f"{vt}.ln_pre.weight", v_hidden, base=1.0)
    layer = f"{vt}.transformer.layers.0"
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        w.matrix(f"{layer}.attention.{proj}.weight", v_hidden, v_hidden)
    w.matrix(f"{layer}.feed_forward.gate_proj.weight", v_inter, v_hidden)
    w.matrix(f"{layer}.feed_forward.up_proj.weight", v_inter, v_hidden)
    w.matrix(f"{layer}.feed_forward.down_proj.weight", v_hidden, v_inter)
    w.vector(f"{layer}.attention_norm.weight", v_hidden, base=1.0)
    w.vector(f"{layer}.ffn_norm.weight", v_hidden, base=1.0)
    mm = "multi_modal_projector"
    w.vector(f"{mm}.norm.weight", v_hidden, base=1.0)
    w.matrix(f"{mm}.patch_merger.merging_layer.weight", v_hidden, v_hidden * merge * merge)
    w.matrix(f"{mm}.linear_1.weight", hidden, v_hidden)
    w.matrix(f"{mm}.linear_2.weight", hidden, hidden)

    ids = {s: i for i, s in enumerate(MISTRAL3_SPECIALS)}
    config = {
        "architectures": ["Mistral3ForConditionalGeneration"],
        "model_type": "mistral3",
        "image_token_index": ids["[IMG]"],
        "multimodal_projector_bias": False,
        "projector_hidden_act": "gelu",
        "spatial_merge_size": merge,
        "vision_feature_layer": -1,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "mistral",
            "sliding_window": None,
            **_llama_text_config(vocab, hidden, inter, layers),
        },
        "vision_config": {
            "model_type": "pixtral",
            "hidden_size": v_hidden,
            "intermediate_size": v_inter,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": v_hidden // 2,
            "num_channels": 3,
            "image_size": MISTRAL3_LONGEST_EDGE,
            "patch_size": patch,
            "hidden_act": "silu",
            "rope_theta": 10_000.0,
        },
    }
    files = {
        "config.json": config,
        "generation_config.json": {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"]},
        "processor_config.json": {
            "processor_class": "PixtralProcessor",
            "image_token": "[IMG]",
            "image_break_token": "[IMG_BREAK]",
            "image_end_token": "[IMG_END]",
            "patch_size": patch,
            "spatial_merge_size": merge,
        },
        "preprocessor_config.json": {
            "image_processor_type": "PixtralImageProcessor",
            "processor_class": "PixtralProcessor",
            "default_to_square": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "patch_size": patch,
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": MISTRAL3_LONGEST_EDGE},
        },
        "tokenizer_config.json": {
            "add_bos_token": False,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "chat_template": MISTRAL3_CHAT_TEMPLATE,
        },
    }
    return _save_folder(out, w, tokenizer, files)


def idefics3_image_tokens(height: int, width: int, image_splitting: bool) -> int:
    """Prompt tokens the Idefics3 processor gives an image (its ``replace_image_token``): the
    global frame as <fake_token_around_image> <global-img>, ``image_seq_len`` <image> and
    <fake_token_around_image>. With splitting, the image is first resized to the longest edge
    (the other side floored, then made even) and then up to whole frames; if that is more than
    one frame, each frame of the grid adds <fake_token_around_image> <row_r_col_c> and
    ``image_seq_len`` <image>, each row a newline, and the grid one more (one byte each)."""
    seq = IDEFICS3_IMAGE_SEQ_LEN
    if not image_splitting:
        return seq + 3
    edge, frame = IDEFICS3_LONGEST_EDGE, IDEFICS3_FRAME_SIZE
    aspect = width / height
    if width >= height:
        h, w = int(edge / aspect), edge
        h += h % 2
    else:
        h, w = edge, int(edge * aspect)
        w += w % 2
    h, w = max(h, 1), max(w, 1)
    aspect = w / h
    if w >= h:
        w = math.ceil(w / frame) * frame
        h = math.ceil(int(w / aspect) / frame) * frame
    else:
        h = math.ceil(h / frame) * frame
        w = math.ceil(int(h * aspect) / frame) * frame
    if h <= frame and w <= frame:
        return seq + 3
    rows, cols = h // frame, w // frame
    return rows * (cols * (seq + 2) + 1) + 1 + seq + 3


def mistral3_image_tokens(height: int, width: int) -> int:
    """Prompt tokens the Pixtral processor gives an image: the image is scaled down to fit the
    longest edge (sides floored) and its sides rounded up to whole merged patches (patch_size x
    spatial_merge_size); one [IMG] per merged patch, an [IMG_BREAK] after each row, the last of
    them an [IMG_END]. 0 for an image with a side that shrinks to nothing, which the processor
    cannot take."""
    ratio = max(height / MISTRAL3_LONGEST_EDGE, width / MISTRAL3_LONGEST_EDGE)
    if ratio > 1:
        height, width = math.floor(height / ratio), math.floor(width / ratio)
    unit = MISTRAL3_PATCH * MISTRAL3_MERGE
    rows, cols = math.ceil(height / unit), math.ceil(width / unit)
    return rows * (cols + 1) if cols else 0
