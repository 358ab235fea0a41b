"""Several images in one request on the Qwen-VL models, whose vision tower returns the embeddings
of every image of a step as one concatenation that the prompt's placeholder runs take slices of
(engine patch mistralrs-core 0025: the slices were taken at the wrong offsets from the third
image on)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
from tiny_vlm import write_qwen2_vl, write_qwen25_vl

from pcai_inference import BackendType, ImagePart, InferenceBackend

QUESTION = "Compare these pictures."
WRITERS = {"qwen2.5-vl": write_qwen25_vl, "qwen2-vl": write_qwen2_vl}


def picture(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=sorted(WRITERS))
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(WRITERS[request.param](tmp_path_factory.mktemp(request.param)))
    yield b
    b.unload()


def answer(vlm: InferenceBackend, images: list[np.ndarray]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    parts = [*(ImagePart(i) for i in images), QUESTION]
    r = vlm.chat([{"role": "user", "content": parts}], max_tokens=4, temperature=0.0, logprobs=True)
    return r.token_ids, r.token_logprobs or ()


def test_every_image_of_three_reaches_the_answer(vlm: InferenceBackend) -> None:
    """Images of 4, 8 and 4 image tokens: replacing any one of them changes the answer's
    log-probabilities. The unpatched engine gave the third image the second half of the second
    image's embeddings, so the third image's pixels did not matter."""
    sizes = [(56, 56), (56, 112), (56, 56)]
    first = [picture(i, *size) for i, size in enumerate(sizes)]
    base = answer(vlm, first)
    assert base == answer(vlm, first)
    for i, size in enumerate(sizes):
        changed = list(first)
        changed[i] = picture(10 + i, *size)
        assert answer(vlm, changed)[1] != base[1], f"replacing image {i + 1} of 3 changed nothing"
