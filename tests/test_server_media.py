"""Images and sounds through the server, as OpenAI clients send them (`image_url` data URLs,
`input_audio` base64), on tiny generated models: the server's answer equals the Python API's."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import openai
import pytest
from server_process import ServerProcess
from test_audio import pcm16, wav_bytes
from test_multimodal import png_bytes
from tiny_vlm import write_gemma3_vlm, write_voxtral

from pcai_inference import BackendType


def serve(folder: Path) -> Iterator[tuple[ServerProcess, openai.OpenAI]]:
    server = ServerProcess(["--model", str(folder)]).start()
    with openai.OpenAI(api_key="none", base_url=server.base_url, max_retries=0) as client:
        yield server, client
    assert server.stop() == 0


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServerProcess, openai.OpenAI]]:
    folder = write_gemma3_vlm(tmp_path_factory.mktemp("gemma3-vlm"))
    for server, client in serve(folder):
        yield folder, server, client


def image(seed: int) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (64, 80, 3), dtype=np.uint8))


def local_answer(folder: Path, messages: list[dict[str, Any]]) -> tuple[str, tuple[float, ...]]:
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(folder)
        r = b.chat(messages, max_tokens=6, temperature=0.0, logprobs=True)
        assert r.token_logprobs is not None
        return r.text, r.token_logprobs


def test_an_image_url_part_is_the_image(vision: tuple[Path, ServerProcess, openai.OpenAI]) -> None:
    folder, _, client = vision
    model = client.models.list().data[0].id
    answers = []
    for seed in (1, 2):
        url = "data:image/png;base64," + base64.b64encode(image(seed)).decode()
        parts: Any = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Describe."}]
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0, logprobs=True
        )
        assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content is not None
        server_logprobs = tuple(e.logprob for e in r.choices[0].logprobs.content)
        text, logprobs = local_answer(folder, [{"role": "user", "content": parts}])
        assert r.choices[0].message.content == text
        assert server_logprobs == pytest.approx(logprobs, abs=1e-6)
        answers.append(server_logprobs)
    assert answers[0] != answers[1], "different images, different answers"


def test_media_the_model_cannot_take_is_400(vision: tuple[Path, ServerProcess, openai.OpenAI]) -> None:
    _, server, _ = vision
    # The vision model takes images but not sounds.
    wav = base64.b64encode(wav_bytes(pcm16("tone"))).decode()
    content = [{"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}, {"type": "text", "text": "x"}]
    status, body = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": content}]})
    assert status == 400 and "cannot take audio" in body["error"]["message"]
    bad = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    status, body = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": bad}]})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_an_input_audio_part_is_the_sound(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = write_voxtral(tmp_path_factory.mktemp("voxtral"))
    for _, client in serve(folder):
        model = client.models.list().data[0].id
        firsts = []
        for kind in ("tone", "chirp"):
            data = base64.b64encode(wav_bytes(pcm16(kind))).decode()
            parts: Any = [
                {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                {"type": "text", "text": "Transcribe."},
            ]
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0, logprobs=True
            )
            assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content is not None
            server_logprobs = tuple(e.logprob for e in r.choices[0].logprobs.content)
            _, logprobs = local_answer(folder, [{"role": "user", "content": parts}])
            assert server_logprobs == pytest.approx(logprobs, abs=1e-6)
            firsts.append(server_logprobs[0])
        assert firsts[0] != firsts[1], "different sounds, different answers"
