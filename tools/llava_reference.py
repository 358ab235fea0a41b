"""Computes tests/data/llava-reference.json: what Hugging Face transformers does with the tiny
LLaVA 1.5 and LLaVA-Next models of tests/tiny_llava.py, for tests/test_llava.py to hold the
engine to (its CLIP feature-layer selection above all).

Run it with a separate environment that has torch and transformers (the project's own does not):

    python -m venv ~/.cache/pcai-inference/hf-venv
    ~/.cache/pcai-inference/hf-venv/bin/pip install torch transformers safetensors pillow numpy tokenizers
    ~/.cache/pcai-inference/hf-venv/bin/python tools/llava_reference.py

Use the NumPy version of the project's environment: the weights come from NumPy's random
generator, and the reference records their sha256 so that the test notices if they change.

For each model and each of its three reference images, with the prompt the engine builds for a
chat message holding the image and ``REFERENCE_QUESTION`` (`<image>` in front of the text, the
model's chat template): the prompt's token ids after image expansion, the 8 greedy tokens, and
the 20 most likely first tokens with their log-probabilities; for ``vision_feature_layer`` -2
(as real checkpoints) and -1 (a control that tells the two apart).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch
import transformers
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_llava import (  # noqa: E402
    LLAVA_IMAGE_TOKEN_ID,
    REFERENCE_QUESTION,
    llava_next_reference_images,
    llava_reference_images,
    write_llava,
    write_llava_next,
)

OUT = ROOT / "tests" / "data" / "llava-reference.json"
SEED = 0
LAYERS = (-2, -1)
GREEDY_TOKENS = 8
TOP = 20
# What the engine's chat template renders for [{"role": "user", "content": "<image>" + question}].
EXPECTED_PROMPT = f"<s>USER: <image>{REFERENCE_QUESTION}\nASSISTANT:"

MODELS: dict[str, Any] = {
    "llava": (write_llava, LlavaForConditionalGeneration, llava_reference_images),
    "llava_next": (write_llava_next, LlavaNextForConditionalGeneration, llava_next_reference_images),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()


def normalized(image: np.ndarray) -> np.ndarray:
    """The pixels both sides should feed the vision tower: channels first, 0/255 -> -1/1."""
    pixels: np.ndarray = image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    return pixels


def expected_pixels(kind: str, image: np.ndarray) -> np.ndarray:
    """LLaVA: the image itself. LLaVA-Next: the base image shrunk to 28 x 28 (exact for these
    images: the wide one is constant along rows, the tall one along columns), then the tiles in
    row-major order."""
    if kind == "llava":
        return normalized(image)[None]
    h, w = image.shape[:2]
    base = image[:: h // 28, :: w // 28]
    tiles = [image[y : y + 28, x : x + 28] for y in range(0, h, 28) for x in range(0, w, 28)]
    return np.stack([normalized(base), *(normalized(t) for t in tiles)])


def run(kind: str, folder: Path, layer: int) -> list[dict[str, Any]]:
    _, model_class, images = MODELS[kind]
    model, info = model_class.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{kind}: weights not loaded as written: {problems}"
    assert model.config.vision_feature_layer == layer
    model.eval()
    processor = AutoProcessor.from_pretrained(folder)  # type: ignore[no-untyped-call]
    text = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<image>" + REFERENCE_QUESTION}], tokenize=False, add_generation_prompt=True
    )
    assert text == EXPECTED_PROMPT, text
    plain = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    cases = []
    for name, image in images().items():
        inputs = processor(images=Image.fromarray(image), text=text, return_tensors="pt")
        pixels = inputs["pixel_values"][0].numpy()
        np.testing.assert_allclose(pixels.reshape(-1, *pixels.shape[-3:]), expected_pixels(kind, image), atol=1e-6)
        ids = inputs["input_ids"][0].tolist()
        image_tokens = ids.count(LLAVA_IMAGE_TOKEN_ID)
        # The same ids as the text with "<image>" as one token, once the image span is collapsed.
        start = ids.index(LLAVA_IMAGE_TOKEN_ID)
        assert ids[:start] + ids[start + image_tokens - 1 :] == plain, (ids, plain)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
            generated = model.generate(**inputs, max_new_tokens=GREEDY_TOKENS, do_sample=False)
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        top = torch.topk(logprobs, TOP)
        greedy = generated[0, len(ids) :].tolist()
        assert len(greedy) == GREEDY_TOKENS and greedy[0] == int(top.indices[0])
        cases.append(
            {
                "image": name,
                "image_sha256": image_sha256(image),
                "height": image.shape[0],
                "width": image.shape[1],
                "prompt_ids": ids,
                "prompt_tokens": len(ids),
                "image_tokens": image_tokens,
                "greedy_ids": greedy,
                "first_top_logprobs": [[int(i), float(v)] for i, v in zip(top.indices, top.values, strict=True)],
            }
        )
    return cases


def main() -> None:
    torch.manual_seed(0)
    reference: dict[str, Any] = {
        "script": "tools/llava_reference.py",
        "about": __doc__.split("\n\n")[0].replace("\n", " ") if __doc__ else "",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "seed": SEED,
        "question": REFERENCE_QUESTION,
        "prompt_text": EXPECTED_PROMPT,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (writer, _, _) in MODELS.items():
            entry: dict[str, Any] = {"writer": writer.__name__, "layers": {}}
            for layer in LAYERS:
                folder = writer(Path(tmp) / f"{kind}{layer}", seed=SEED, vision_feature_layer=layer)
                digest = sha256(folder / "model.safetensors")
                assert entry.setdefault("safetensors_sha256", digest) == digest
                entry["layers"][str(layer)] = run(kind, folder, layer)
            reference["models"][kind] = entry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
