"""Images in requests, on tiny random-weight vision models (tests/tiny_vlm.py): Gemma 3,
Idefics3 (SmolVLM) and Mistral 3, whose chat templates place images, and Qwen2-VL and
Qwen2.5-VL, whose processors need placeholders in the text. Image-token counts are worked out
from each model's processor configuration, as Hugging Face's processors compute them."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image
from tiny_vlm import (
    GEMMA3_IMAGE_PROMPT_TOKENS,
    idefics3_image_tokens,
    mistral3_image_tokens,
    qwen_image_tokens,
    write_gemma3_vlm,
    write_idefics3,
    write_mistral3,
    write_qwen2_vl,
    write_qwen25_vl,
)

from pcai_inference import (
    BackendType,
    GenerateRequest,
    ImagePart,
    InferenceBackend,
    InvalidImageError,
    InvalidRequestError,
    ModelFormatError,
    PcaiError,
    TextPart,
)

QUESTION = "What is in this picture?"


def solid(rgb: tuple[int, int, int], size: int = 64) -> np.ndarray:
    return np.tile(np.array(rgb, dtype=np.uint8), (size, size, 1))


def checkerboard(size: int = 64, square: int = 8) -> np.ndarray:
    cells = (np.indices((size, size)) // square).sum(axis=0) % 2
    return (np.stack([cells] * 3, axis=-1) * 255).astype(np.uint8)


def noise(height: int = 48, width: int = 80) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


WRITERS: dict[str, Callable[[Path], Path]] = {
    "gemma3": write_gemma3_vlm,
    "qwen2.5-vl": write_qwen25_vl,
    "qwen2-vl": write_qwen2_vl,
    # With image splitting on, as SmolVLM ships (engine patches 0028 and 0029).
    "idefics3": write_idefics3,
    "mistral3": write_mistral3,
}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    folder = WRITERS[request.param](tmp_path_factory.mktemp(request.param))
    b.load_model(folder)
    b.family = request.param  # type: ignore[attr-defined]
    b.folder = folder  # type: ignore[attr-defined]
    yield b
    b.unload()


def image_tokens(backend: InferenceBackend, image: np.ndarray) -> int:
    """The prompt tokens one image adds, from the model's processor configuration."""
    height, width = image.shape[:2]
    family = backend.family  # type: ignore[attr-defined]
    if family == "gemma3":
        # 16 soft tokens (image_seq_length), <start_of_image>, <end_of_image> and the four
        # newline bytes around them (the tokenizer is byte-level: "\n\n" is two tokens).
        return GEMMA3_IMAGE_PROMPT_TOKENS
    if family == "idefics3":
        return idefics3_image_tokens(height, width, image_splitting=True)
    if family == "mistral3":
        return mistral3_image_tokens(height, width)
    # One token per 2 x 2 patches of 14 px after the resize, and the start/end tokens.
    return qwen_image_tokens(height, width)


def prompt_tokens(backend: InferenceBackend, *images: np.ndarray) -> int:
    """The prompt's length, in tokens, for these images and the question."""
    parts = [*(ImagePart(i) for i in images), QUESTION]
    return backend.chat([{"role": "user", "content": parts}], max_tokens=1, temperature=0.0).prompt_tokens


def ask(backend: InferenceBackend, image: Any, **params: Any) -> tuple[int, ...]:
    params.setdefault("max_tokens", 12)
    params.setdefault("temperature", 0.0)
    r = backend.chat([{"role": "user", "content": [{"type": "image", "image": image}, QUESTION]}], **params)
    assert r.tokens_generated == params["max_tokens"]
    return r.token_ids


def test_a_vision_folder_is_detected(vlm: InferenceBackend, backend: InferenceBackend) -> None:
    assert vlm.capabilities == {"text", "image"}  # type: ignore[attr-defined]
    assert backend.capabilities == {"text"}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serves a folder on 127.0.0.1 for http(s) image URLs."""
    root = tmp_path_factory.mktemp("served-images")
    (root / "checker.png").write_bytes(png_bytes(checkerboard()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_every_form_of_one_image_gives_the_same_output(
    vlm: InferenceBackend, tmp_path: Path, image_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = checkerboard()
    encoded = png_bytes(array)
    path = tmp_path / "checker.png"
    path.write_bytes(encoded)
    data_url = "data:image/png;base64," + base64.b64encode(encoded).decode()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    forms: dict[str, Any] = {
        "path": path,
        "str path": str(path),
        "bytes": encoded,
        "data URL": data_url,
        "http URL": f"{image_server}/checker.png",
        "PIL": Image.fromarray(array),
        "PIL RGBA": Image.fromarray(array).convert("RGBA"),
        "numpy": array,
        "numpy RGBA": np.dstack([array, np.full(array.shape[:2], 255, np.uint8)]),
        "PIL palette": Image.fromarray(array).convert("P"),
    }
    outputs = {name: ask(vlm, image) for name, image in forms.items()}
    # The OpenAI spelling of an image part.
    url_part = {"type": "image_url", "image_url": {"url": data_url}}
    outputs["image_url part"] = ask_with_parts(vlm, [url_part, TextPart(QUESTION)])
    outputs["ImagePart"] = ask_with_parts(vlm, [ImagePart(array), QUESTION])
    assert len(set(outputs.values())) == 1, outputs
    # And twice in a row.
    assert ask(vlm, array) == outputs["numpy"]


def ask_with_parts(backend: InferenceBackend, parts: list[Any]) -> tuple[int, ...]:
    r = backend.chat([{"role": "user", "content": parts}], max_tokens=12, temperature=0.0)
    return r.token_ids


def test_different_images_give_different_output(vlm: InferenceBackend) -> None:
    images = [solid((255, 0, 0)), solid((0, 0, 255)), checkerboard(), noise()]
    outputs = [ask(vlm, image) for image in images]
    assert len(set(outputs)) == len(images), outputs


IMAGE_SETS = {
    "square": [(56, 56)],
    "wide": [(48, 80)],
    "square and wide": [(56, 56), (48, 80)],
    "two shapes": [(32, 80), (56, 56)],
}


@pytest.mark.parametrize("sizes", IMAGE_SETS.values(), ids=IMAGE_SETS.keys())
def test_an_image_adds_the_tokens_the_processor_config_implies(
    vlm: InferenceBackend, sizes: list[tuple[int, int]]
) -> None:
    images = [noise(*size) for size in sizes]
    added = prompt_tokens(vlm, *images) - prompt_tokens(vlm)
    assert added == sum(image_tokens(vlm, image) for image in images)


def test_the_image_token_arithmetic() -> None:
    """The counts above, worked by hand from each processor's rules and the tiny configs."""
    # Gemma 3: 16 soft tokens, <start_of_image>, <end_of_image> and "\n\n" on each side.
    assert GEMMA3_IMAGE_PROMPT_TOKENS == 16 + 2 + 4
    # Qwen: 56 x 56 is 2 x 2 tokens; 48 x 80 rounds to 56 x 84, past max_pixels, and scales
    # down to 28 x 56: 1 x 2. Both with <|vision_start|> and <|vision_end|>.
    assert (qwen_image_tokens(56, 56), qwen_image_tokens(48, 80)) == (4 + 2, 2 + 2)
    # Idefics3, one 32 x 32 frame of 4 tokens: <fake> <global-img> 4 x <image> <fake>.
    assert idefics3_image_tokens(48, 80, image_splitting=False) == 7
    # Split: 56 x 56 -> 64 x 64, 2 x 2 frames of <fake> <row_r_col_c> 4 x <image> (6), a newline
    # per row and one more, then the global frame (7): 4 * 6 + 2 + 1 + 7. 32 x 80 -> 26 x 64 -> 32 x 64: 1 x 2.
    assert idefics3_image_tokens(56, 56, image_splitting=True) == 34
    assert idefics3_image_tokens(32, 80, image_splitting=True) == 2 * 6 + 1 + 1 + 7
    # Mistral 3, merged patches of 16 px: 56 x 56 -> 32 x 32: 2 rows of 2 [IMG] and a break/end.
    # 48 x 80 -> 19 x 32 -> 32 x 32 (rounded up to whole merged patches); 32 x 80 -> 12 x 32 -> 16 x 32.
    assert [mistral3_image_tokens(h, w) for h, w in [(56, 56), (48, 80), (32, 80)]] == [6, 6, 3]
    assert mistral3_image_tokens(20, 2000) == 0  # 0 x 32


def test_prompt_with_images_is_one_user_message(vlm: InferenceBackend) -> None:
    image = checkerboard()
    by_prompt = vlm.generate(GenerateRequest(prompt=QUESTION, images=[image], max_tokens=12, temperature=0.0))
    assert by_prompt.token_ids == ask(vlm, image)


def test_concurrent_image_requests_give_their_solo_output(vlm: InferenceBackend) -> None:
    """A sequence still carrying its images shares no engine step with another (Qwen2.5-VL's
    processor joins the pixels of every sequence in a step, and the unpatched engine panicked on
    two images of different sizes); each request gets the tokens it gets alone. Once prefilled,
    Gemma 3's sequences decode together; these tiny models have F32 weights, whose matrix
    product (candle's `gemm`) rounds differently with the number of rows in a step, so their
    log-probabilities agree to float rounding, not to the bit as with quantized weights."""
    cases = [(solid((255, 0, 0)), QUESTION), (noise(), "Describe this picture in a few words, and be brief about it.")]

    def answer(case: tuple[np.ndarray, str]) -> tuple[tuple[int, ...], tuple[float, ...]]:
        image, text = case
        message = [{"role": "user", "content": [{"type": "image", "image": image}, text]}]
        r = vlm.chat(message, max_tokens=16, temperature=0.0, logprobs=True)
        return r.token_ids, r.token_logprobs or ()

    alone = [answer(case) for case in cases] * 2
    with ThreadPoolExecutor(max_workers=len(alone)) as pool:
        together = list(pool.map(answer, cases * 2))
    assert [ids for ids, _ in together] == [ids for ids, _ in alone]
    for (_, batched), (_, solo) in zip(together, alone, strict=True):
        assert batched == pytest.approx(solo, abs=1e-5)


def test_streaming_async_and_sampling_with_an_image(vlm: InferenceBackend) -> None:
    image = noise()
    message = [{"role": "user", "content": [ImagePart(image), QUESTION]}]
    whole = vlm.chat(message, max_tokens=12, temperature=0.0)
    stream = vlm.chat_stream(message, max_tokens=12, temperature=0.0)
    assert "".join(chunk.text for chunk in stream) == whole.text
    assert stream.last is not None and stream.last.prompt_tokens == whole.prompt_tokens
    assert asyncio.run(vlm.achat(message, max_tokens=12, temperature=0.0)).text == whole.text
    seeded = [vlm.chat(message, max_tokens=12, temperature=1.0, seed=s).token_ids for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] != seeded[2]
    # Leaving a stream early cancels it; the backend goes on.
    early = vlm.chat_stream(message, max_tokens=200, temperature=0.0)
    next(iter(early))
    early.close()
    assert vlm.chat(message, max_tokens=12, temperature=0.0).text == whole.text


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """The start of a PNG of this size: the header and a first compressed chunk of zero rows.
    (A whole 50,000 x 50,000 one is 2.5 GB of pixels in a few MB.)"""
    rows = zlib.compress(bytes(64 * (1 + 3 * width)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + (png_chunk(b"IDAT", rows))
    )


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"this is not an image", r"not an image in a known format .* 74 68 69 73"),
        (png_bytes(noise())[:5000], r"truncated or damaged Png"),
        (png_bomb(50_000, 50_000), r"50000 x 50000 = 2500000000 pixels, past the limit of 67108864"),
        (b"", r"empty"),
        (np.zeros((8, 8, 3), dtype=np.float32), r"must be uint8"),
        (np.zeros((8, 8, 2), dtype=np.uint8), r"must be H x W x 3"),
        (np.zeros((0, 8, 3), dtype=np.uint8), r"empty"),
        ("data:image/png;base64,@@@", r"base64 is damaged"),
        ("/no/such/picture.png", r"no file at /no/such/picture\.png"),
        (12345, r"is a int; give a path, bytes"),
    ],
)
def test_bad_images_are_explained(vlm: InferenceBackend, image: Any, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message) as e:
        ask(vlm, image)
    assert isinstance(e.value, PcaiError) and isinstance(e.value, InvalidRequestError)
    assert len(ask(vlm, checkerboard())) == 12  # the backend keeps working


QWEN_REFUSED = [
    (solid((1, 2, 3), 16), "needs at least 28 pixels on each side"),
    (solid((1, 2, 3), 40), "resizes to one image token"),
    (noise(28, 140), "one side would shrink to nothing"),
    (noise(28, 6000), "aspect ratios up to 200:1"),
]
# Images each processor cannot take, and why; every other family takes any size.
REFUSED = {
    "qwen2.5-vl": QWEN_REFUSED,
    "qwen2-vl": QWEN_REFUSED,
    # Pixtral scales 20 x 2000 to fit 32 px: 0 x 32.
    "mistral3": [(noise(20, 2000), "one side would shrink to nothing"), (noise(2000, 20), "shrink to nothing")],
}


def test_images_the_engine_cannot_take_are_refused_first(vlm: InferenceBackend) -> None:
    """Processors in mistralrs 0.8.1 panic on images they would resize to nothing (Qwen also to
    one token), which would leave a dead backend: those are refused, and the backend goes on.
    This test has a backend of its own, as one such image kills it."""
    family = vlm.family  # type: ignore[attr-defined]
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(vlm.folder)  # type: ignore[attr-defined]
    try:
        for image, why in REFUSED.get(family, []):
            with pytest.raises(InvalidImageError, match=why):
                ask(b, image)
        # Gemma 3 and Idefics3 resize any image to their frame; Pixtral rounds sides up to 16 px.
        smallest = 56 if family.startswith("qwen") else 1
        assert len(ask(b, solid((1, 2, 3), smallest))) == 12
    finally:
        b.unload()


def test_the_pixel_limit_is_configurable(vlm: InferenceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vlm, "max_image_pixels", 64 * 64 - 1)
    with pytest.raises(InvalidImageError, match="64 x 64 = 4096 pixels, past the limit of 4095"):
        ask(vlm, png_bytes(checkerboard()))
    monkeypatch.setattr(vlm, "max_image_pixels", 64 * 64)
    assert len(ask(vlm, png_bytes(checkerboard()))) == 12


def test_a_text_model_refuses_images(backend: InferenceBackend) -> None:
    with pytest.raises(InvalidRequestError, match="this model reads text only; it cannot take images"):
        ask(backend, checkerboard())
    with pytest.raises(InvalidRequestError, match="images= goes with prompt="):
        GenerateRequest(messages=[{"role": "user", "content": "hi"}], images=[checkerboard()])


def test_idefics3_splits_images_as_smolvlm_does(tmp_path: Path) -> None:
    """SmolVLM's processor cuts an image into a grid of frames and adds a global one, so the
    prompt grows with the grid; each frame reaches the model."""
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(write_idefics3(tmp_path / "idefics3"))
    try:
        without = prompt_tokens(b)
        for size in [(56, 56), (32, 80), (16, 16), (41, 80)]:
            added = prompt_tokens(b, noise(*size)) - without
            assert added == idefics3_image_tokens(*size, image_splitting=True), size
        images = [solid((255, 0, 0)), solid((0, 0, 255)), checkerboard(), noise()]
        assert len({ask(b, image) for image in images}) == len(images)
    finally:
        b.unload()


def test_an_idefics3_folder_without_padding_is_refused_at_load(tmp_path: Path) -> None:
    """Idefics3's processor in mistralrs 0.8.1 builds its pixel mask only when `do_pad` is true
    and panics on the first image without it (inputs_processor.rs:165)."""
    folder = write_idefics3(tmp_path / "idefics3", image_splitting=False)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    del config["do_pad"]
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError, match=r"preprocessor_config\.json lacks `do_pad`"):
        b.load_model(folder)


def test_a_processor_config_that_would_crash_the_engine_is_refused_at_load(tmp_path: Path) -> None:
    folder = write_gemma3_vlm(tmp_path / "gemma3")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    del config["size"]
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError, match=r"preprocessor_config\.json lacks `size\.height`"):
        b.load_model(folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFormatError, match=r"needs preprocessor_config\.json"):
        b.load_model(folder)
    assert not b.is_loaded
