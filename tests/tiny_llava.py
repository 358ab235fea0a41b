"""Tiny random-weight LLaVA 1.5 and LLaVA-Next folders in the llava-hf hub layout, written with
numpy, safetensors and tokenizers (helpers from ``tiny_vlm.py``), and the images their
transformers reference (``tools/llava_reference.py``, ``tests/data/llava-reference.json``) was
computed on.

The CLIP tower has 3 layers, so each `vision_feature_layer` picks a different hidden state; the
image features (the projector's output) are much larger than the token embeddings, so a wrong
layer shows in the first generated token's log-probabilities.

The reference images are built so that the engine's image preprocessing and transformers' give
the same pixels to the bit: each channel is 0 or 255 and the normalization is mean 0.5, std 0.5,
so the normalized pixels are exactly -1 or 1 (the engine rounds pixel values to bfloat16, which
holds these exactly); every image is at a size neither side resizes, or, for LLaVA-Next's
downscaled base image, constant along the axis that is shrunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tiny_vlm import (
    LLAMA_HEAD_DIM,
    LLAMA_HEADS,
    LLAMA_KV_HEADS,
    _encoder_layer,
    _llama_decoder,
    _printable_head,
    _save_folder,
    _vit_config,
    _Weights,
    byte_level_tokenizer,
)

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
LLAVA_IMAGE_TOKEN_ID = LLAVA_SPECIALS.index("<image>")
LLAVA_IMAGE_SIZE = 28
LLAVA_PATCH_SIZE = 14
LLAVA_VISION_LAYERS = 3
# Best resolutions for LLaVA-Next's "anyres" tiling, as [height, width] (transformers' order;
# the engine reads them as [width, height], which is the same set). With [28, 28] in the list, a
# 28 x 28 image takes one tile with no resize; 56 x 28 and 28 x 56 take two tiles.
LLAVA_NEXT_GRID_PINPOINTS = [[28, 28], [28, 56], [56, 28]]

# llava-1.5's "USER: ... ASSISTANT:" form. The engine hands the template each message's text only,
# with `<image>` written in front of it: "<s>USER: <image>What is it?\nASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m.role | upper }}: "
    "{% if m.content is string %}{{ m.content }}{% else %}{% for part in m.content %}"
    "{% if part.type == 'image' %}<image>{% elif part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

REFERENCE_QUESTION = "What is in this picture?"


def write_llava(out: Path, seed: int = 0, vision_feature_layer: int = -2) -> Path:
    """A ``LlavaForConditionalGeneration`` folder: a 3-layer CLIP tower (hidden 32) on 28 x 28
    images in 14 px patches (4 image tokens), a 2-layer projector, a 2-layer Llama (hidden 64).
    The weights depend on `seed` only, not on `vision_feature_layer`."""
    return _write(out, seed, vision_feature_layer, next_=False)


def write_llava_next(out: Path, seed: int = 0, vision_feature_layer: int = -2) -> Path:
    """A ``LlavaNextForConditionalGeneration`` folder: `write_llava`'s model plus the
    `image_newline` row, with anyres tiling over ``LLAVA_NEXT_GRID_PINPOINTS`` (28 px tiles)."""
    return _write(out, seed, vision_feature_layer, next_=True)


def _write(out: Path, seed: int, vision_feature_layer: int, next_: bool) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_tokenizer(LLAVA_SPECIALS)
    vocab, hidden, inter, layers = tokenizer.get_vocab_size(), 64, 128, 2
    v_hidden, v_inter, patch, size = 32, 64, LLAVA_PATCH_SIZE, LLAVA_IMAGE_SIZE
    w = _Weights(seed)
    _llama_decoder(w, "language_model.model", vocab, hidden, inter, layers)
    _printable_head(w, "language_model.lm_head.weight", vocab, hidden, len(LLAVA_SPECIALS))
    vt = "vision_tower.vision_model"
    w.vector(f"{vt}.embeddings.class_embedding", v_hidden, scale=1.0)
    w.array(f"{vt}.embeddings.patch_embedding.weight", (v_hidden, 3, patch, patch), 3 * patch * patch)
    w.matrix(f"{vt}.embeddings.position_embedding.weight", (size // patch) ** 2 + 1, v_hidden)
    for norm in ("pre_layrnorm", "post_layernorm"):
        w.vector(f"{vt}.{norm}.weight", v_hidden, base=1.0)
        w.vector(f"{vt}.{norm}.bias", v_hidden)
    for i in range(LLAVA_VISION_LAYERS):
        _encoder_layer(w, f"{vt}.encoder.layers.{i}", v_hidden, v_inter)
    w.matrix("multi_modal_projector.linear_1.weight", hidden, v_hidden)
    w.vector("multi_modal_projector.linear_1.bias", hidden)
    w.matrix("multi_modal_projector.linear_2.weight", hidden, hidden)
    w.vector("multi_modal_projector.linear_2.bias", hidden)
    if next_:
        w.vector("image_newline", hidden, scale=1.0)

    ids = {s: i for i, s in enumerate(LLAVA_SPECIALS)}
    config: dict[str, Any] = {
        "architectures": ["LlavaNextForConditionalGeneration" if next_ else "LlavaForConditionalGeneration"],
        "model_type": "llava_next" if next_ else "llava",
        "image_token_index": LLAVA_IMAGE_TOKEN_ID,
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True,
        "vision_feature_layer": vision_feature_layer,
        "vision_feature_select_strategy": "default",
        "image_seq_length": (size // patch) ** 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": LLAMA_HEADS,
            "num_key_value_heads": LLAMA_KV_HEADS,
            "head_dim": LLAMA_HEAD_DIM,
            "hidden_act": "silu",
            "vocab_size": vocab,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10_000.0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10_000.0},
            "max_position_embeddings": 512,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        "vision_config": {
            **_vit_config(
                "clip_vision_model", v_hidden, v_inter, size, patch, LLAVA_VISION_LAYERS, act="quick_gelu", eps=1e-5
            ),
            "projection_dim": v_hidden,
        },
    }
    if next_:
        config["image_grid_pinpoints"] = LLAVA_NEXT_GRID_PINPOINTS
    processor = "LlavaNextProcessor" if next_ else "LlavaProcessor"
    preprocessor: dict[str, Any] = {
        "image_processor_type": "LlavaNextImageProcessor" if next_ else "CLIPImageProcessor",
        "processor_class": processor,
        "crop_size": {"height": size, "width": size},
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 3,
        "rescale_factor": 1 / 255,
    }
    if next_:
        preprocessor |= {"image_grid_pinpoints": LLAVA_NEXT_GRID_PINPOINTS, "do_pad": True}
    files = {
        "config.json": config,
        "generation_config.json": {
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        "processor_config.json": {
            "processor_class": processor,
            "image_token": "<image>",
            "patch_size": patch,
            "vision_feature_select_strategy": "default",
            "num_additional_image_tokens": 1,
        },
        "preprocessor_config.json": preprocessor,
        "tokenizer_config.json": {
            # The tokenizer.json as it is: no class that would rebuild it or add a BOS.
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": False,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "image_token": "<image>",
            "chat_template": LLAVA_CHAT_TEMPLATE,
        },
    }
    return _save_folder(out, w, tokenizer, files, indented=("config.json", "preprocessor_config.json"))


def _binary(*channels: np.ndarray) -> np.ndarray:
    """An RGB image from three boolean planes: each channel 0 or 255."""
    return (np.stack(channels, axis=-1) * 255).astype(np.uint8)


def llava_reference_images() -> dict[str, np.ndarray]:
    """Three 28 x 28 images (LLaVA 1.5's native size, so nothing is resized)."""
    y, x = np.indices((LLAVA_IMAGE_SIZE, LLAVA_IMAGE_SIZE))
    return {
        "checker": _binary((x // 7 + y // 7) % 2 == 0, (x // 14) % 2 == 1, (y // 4) % 2 == 0),
        "diagonal": _binary((x + y) % 9 < 4, (x - y) % 6 < 2, (x * y) % 5 == 0),
        "disc": _binary((x - 13.5) ** 2 + (y - 13.5) ** 2 < 81, x < y, (x + 2 * y) % 7 < 3),
    }


def llava_next_reference_images() -> dict[str, np.ndarray]:
    """Three images whose anyres tiling takes no resize: 28 x 28 (one tile), 56 wide x 28 high
    and 28 wide x 56 high (two tiles each). The base image, every image shrunk to 28 x 28, is
    exact only for the square one, so the wide image is constant along each row and the tall
    one along each column."""
    square = llava_reference_images()["diagonal"]
    rows = np.arange(28)[:, None] * np.ones((1, 56), dtype=int)
    cols = np.arange(28)[None, :] * np.ones((56, 1), dtype=int)
    return {
        "square": square,
        "wide": _binary(rows % 3 == 0, rows % 5 < 2, (rows // 4) % 2 == 1),
        "tall": _binary((cols // 3) % 2 == 0, cols % 7 < 3, cols % 4 == 1),
    }
