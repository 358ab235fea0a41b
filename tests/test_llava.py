"""LLaVA 1.5 and LLaVA-Next on tiny random-weight models (tests/tiny_llava.py), held to what
Hugging Face transformers computes on the same weights and images
(tests/data/llava-reference.json, made by tools/llava_reference.py): the image-expanded prompt's
length, the first generated position's log-probabilities and the greedy tokens, for
`vision_feature_layer` -2 (as released checkpoints) and -1. A CLIP layer off by one, an image
placed elsewhere in the prompt or a wrong anyres tiling each moves the log-probabilities by far
more than the tolerance. Then the checks every vision model gets."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image
from test_multimodal import ask, checkerboard, noise, png_bytes, solid
from tiny_llava import (
    LLAVA_IMAGE_TOKEN_ID,
    llava_next_reference_images,
    llava_reference_images,
    write_llava,
    write_llava_next,
)

from pcai_inference import (
    BackendType,
    ImagePart,
    InferenceBackend,
    InvalidImageError,
    InvalidRequestError,
    MistralRsBackend,
)

from conftest import loaded

REFERENCE: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "llava-reference.json").read_text())
MODELS = {"llava": (write_llava, llava_reference_images), "llava_next": (write_llava_next, llava_next_reference_images)}
# Both sides run float32: the engine agrees to about 2e-6. Multiplying CLIP's attention matrices in
# float16 on the CPU, as mistralrs-quant's `MatMul` did before our patch 0003, moves these log-
# probabilities by 1e-4 to 8e-4.
TOLERANCE = 5e-5


@dataclass
class ReferenceModel:
    backend: InferenceBackend
    kind: str
    layer: int

    @property
    def cases(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = REFERENCE["models"][self.kind]["layers"][str(self.layer)]
        return cases

    def image(self, case: dict[str, Any]) -> np.ndarray:
        image: np.ndarray = MODELS[self.kind][1]()[case["image"]]
        return image


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(kind: str, folder: Path, layer: int) -> Path:
    """The tiny model the reference was computed on; skips when NumPy now draws other weights."""
    written = MODELS[kind][0](folder, seed=REFERENCE["seed"], vision_feature_layer=layer)
    if sha256((written / "model.safetensors").read_bytes()) != REFERENCE["models"][kind]["safetensors_sha256"]:
        pytest.skip(
            f"the tiny {kind} weights drawn with NumPy {np.__version__} differ from those the reference was "
            f"computed on (NumPy {REFERENCE['versions']['numpy']}): rerun tools/llava_reference.py"
        )
    return written


@pytest.fixture(
    scope="module",
    params=[(kind, layer) for kind in MODELS for layer in (-2, -1)],
    ids=lambda p: f"{p[0]}-layer{p[1]}",
)
def reference_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceModel]:
    kind, layer = request.param
    for backend in loaded(write(kind, tmp_path_factory.mktemp(f"{kind}{layer}"), layer)):
        yield ReferenceModel(backend, kind, layer)


def chat(backend: InferenceBackend, image: Any, **params: Any) -> Any:
    message = {"role": "user", "content": [ImagePart(image), REFERENCE["question"]]}
    return backend.chat([message], temperature=0.0, **params)


def test_the_reference_images_are_the_ones_it_was_computed_on(reference_model: ReferenceModel) -> None:
    for case in reference_model.cases:
        image = reference_model.image(case)
        assert sha256(repr(image.shape).encode() + image.tobytes()) == case["image_sha256"], case["image"]


def test_the_prompt_is_tokenized_as_transformers_does(reference_model: ReferenceModel) -> None:
    """The text around the image: transformers' ids with the image's tokens taken out are the
    ids of the same chat without the image."""
    assert isinstance(reference_model.backend, MistralRsBackend)
    text_only = reference_model.backend.chat_prompt_ids([{"role": "user", "content": REFERENCE["question"]}])
    for case in reference_model.cases:
        around = [i for i in case["prompt_ids"] if i != LLAVA_IMAGE_TOKEN_ID]
        assert around == text_only, case["image"]
    assert reference_model.backend.detokenize(text_only) == REFERENCE["prompt_text"].replace("<image>", "")


def test_an_image_expands_to_the_tokens_transformers_gives_it(reference_model: ReferenceModel) -> None:
    """LLaVA: (28 / 14)^2 = 4 tokens. LLaVA-Next: 4 for the base image, then the tiles' patch
    rows, each with a newline token: 10 (one tile), 14 (two side by side), 16 (two stacked)."""
    backend = reference_model.backend
    without = backend.chat([{"role": "user", "content": REFERENCE["question"]}], max_tokens=1).prompt_tokens
    counts = [chat(backend, reference_model.image(c), max_tokens=1).prompt_tokens for c in reference_model.cases]
    assert counts == [c["prompt_tokens"] for c in reference_model.cases]
    assert [n - without for n in counts] == [c["image_tokens"] for c in reference_model.cases]


def logprob_gap(ours: dict[int, float], theirs: dict[int, float]) -> float:
    """The largest log-probability difference over both top-20 lists: exact where a token is in
    both, and where it is in one only, at least how far it is above the other list's last."""
    gap = 0.0
    for token in ours.keys() | theirs.keys():
        if token in ours and token in theirs:
            gap = max(gap, abs(ours[token] - theirs[token]))
        elif token in theirs:
            gap = max(gap, theirs[token] - min(ours.values()))
        else:
            gap = max(gap, ours[token] - min(theirs.values()))
    return gap


def test_log_probabilities_and_greedy_tokens_are_transformers(reference_model: ReferenceModel) -> None:
    """The first generated position's 20 most likely tokens, within TOLERANCE, and the 8 greedy
    tokens, for each reference image. On failure the message also gives the gap to the other
    feature layer's reference: a CLIP layer off by one matches that one instead."""
    other = str(-3 - reference_model.layer)  # -2 <-> -1
    other_cases = {c["image"]: c for c in REFERENCE["models"][reference_model.kind]["layers"][other]}
    report = []
    for case in reference_model.cases:
        r = chat(reference_model.backend, reference_model.image(case), max_tokens=8, top_logprobs=20)
        ours = dict(r.top_logprobs[0])
        gap = logprob_gap(ours, dict((i, v) for i, v in case["first_top_logprobs"]))
        gap_other = logprob_gap(ours, dict((i, v) for i, v in other_cases[case["image"]]["first_top_logprobs"]))
        report.append(
            (case["image"], round(gap, 6), list(r.token_ids) == case["greedy_ids"], round(gap_other, 6), r.token_ids)
        )
    failures = [row for row in report if row[1] > TOLERANCE or not row[2]]
    assert not failures, (
        f"{reference_model.kind}, vision_feature_layer {reference_model.layer}: "
        f"(image, log-probability gap, greedy ids equal, gap to layer {other}'s reference, our ids): {report}"
    )


@pytest.fixture(scope="module", params=sorted(MODELS))
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceBackend]:
    kind = request.param
    yield from loaded(MODELS[kind][0](tmp_path_factory.mktemp(kind)))


def test_every_form_of_one_image_gives_the_same_output(vlm: InferenceBackend, tmp_path: Path) -> None:
    array = checkerboard()
    encoded = png_bytes(array)
    path = tmp_path / "checker.png"
    path.write_bytes(encoded)
    forms: dict[str, Any] = {
        "numpy": array,
        "PNG bytes": encoded,
        "path": path,
        "data URL": "data:image/png;base64," + base64.b64encode(encoded).decode(),
        "PIL": Image.fromarray(array),
    }
    outputs = {name: ask(vlm, image) for name, image in forms.items()}
    assert len(set(outputs.values())) == 1, outputs


def test_different_images_give_different_output(vlm: InferenceBackend) -> None:
    images = [solid((255, 0, 0)), solid((0, 0, 255)), checkerboard(), noise()]
    outputs = [ask(vlm, image) for image in images]
    assert len(set(outputs)) == len(images), outputs


def test_a_bad_image_is_refused_and_the_backend_goes_on(vlm: InferenceBackend) -> None:
    with pytest.raises(InvalidImageError, match="not an image in a known format"):
        ask(vlm, b"this is not an image")
    assert len(ask(vlm, checkerboard())) == 12


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_second_image_is_refused_and_the_backend_goes_on(kind: str, tmp_path: Path) -> None:
    """mistralrs 0.8.1's LLaVA processors take one image per request; a second one made the
    engine panic, leaving a dead backend."""
    backend = BackendType.MISTRALRS.create(device="cpu")
    backend.load_model(MODELS[kind][0](tmp_path / kind))
    try:
        two = {"role": "user", "content": [ImagePart(checkerboard()), ImagePart(noise()), "Compare them."]}
        with pytest.raises(InvalidRequestError, match="one image"):
            backend.chat([two], max_tokens=4, temperature=0.0)
        assert len(ask(backend, checkerboard())) == 12
    finally:
        backend.unload()
