"""Images in requests, on tiny random-weight vision models (tests/tiny_vlm.py): Gemma 3, whose
chat template places images, and Qwen2.5-VL, whose processor needs placeholders in the text
and gives size-dependent image-token counts."""

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
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image
from tiny_vlm import GEMMA3_IMAGE_PROMPT_TOKENS, qwen_image_tokens, write_gemma3_vlm, write_qwen2_vl, write_qwen25_vl

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


WRITERS = {"gemma3": write_gemma3_vlm, "qwen2.5-vl": write_qwen25_vl, "qwen2-vl": write_qwen2_vl}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(WRITERS[request.param](tmp_path_factory.mktemp(request.param)))
    b.family = request.param  # type: ignore[attr-defined]
    yield b
    b.unload()


def image_tokens(backend: InferenceBackend, image: np.ndarray) -> int:
    """The prompt tokens one image adds, from the model's processor configuration."""
    if backend.family == "gemma3":  # type: ignore[attr-defined]
        # 16 soft tokens (image_seq_length), <start_of_image>, <end_of_image> and the four
        # newline bytes around them (the tokenizer is byte-level: "\n\n" is two tokens).
        return GEMMA3_IMAGE_PROMPT_TOKENS
    # One token per 2 x 2 patches of 14 px after the resize, and the start/end tokens.
    return qwen_image_tokens(*image.shape[:2])


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


def test_an_image_adds_the_tokens_the_processor_config_implies(vlm: InferenceBackend) -> None:
    def prompt_tokens(*images: np.ndarray) -> int:
        parts = [*(ImagePart(i) for i in images), QUESTION]
        return vlm.chat([{"role": "user", "content": parts}], max_tokens=1, temperature=0.0).prompt_tokens

    without = prompt_tokens()
    square, wide = solid((9, 9, 9), 56), noise(48, 80)
    assert prompt_tokens(square) - without == image_tokens(vlm, square)
    assert prompt_tokens(wide) - without == image_tokens(vlm, wide)
    assert prompt_tokens(square, wide) - without == image_tokens(vlm, square) + image_tokens(vlm, wide)
    expected = {"gemma3": (22, 22), "qwen2.5-vl": (6, 4), "qwen2-vl": (6, 4)}[vlm.family]  # type: ignore[attr-defined]
    assert (image_tokens(vlm, square), image_tokens(vlm, wide)) == expected


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


def test_images_the_engine_cannot_take_are_refused_first(vlm: InferenceBackend) -> None:
    """Qwen's processor in mistralrs 0.8.1 panics on images it would resize to one token or to
    nothing, which would leave a dead backend: those are refused, and the backend goes on."""
    if not vlm.family.startswith("qwen"):  # type: ignore[attr-defined]
        assert len(ask(vlm, solid((1, 2, 3), 1))) == 12  # Gemma 3 resizes any image to 64 x 64
        return
    for image, why in [
        (solid((1, 2, 3), 16), "needs at least 28 pixels on each side"),
        (solid((1, 2, 3), 40), "resizes to one image token"),
        (noise(28, 140), "one side would shrink to nothing"),
        (noise(28, 6000), "aspect ratios up to 200:1"),
    ]:
        with pytest.raises(InvalidImageError, match=why):
            ask(vlm, image)
    assert len(ask(vlm, solid((1, 2, 3), 56))) == 12


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
