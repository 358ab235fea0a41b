"""Audio in requests, on a tiny random-weight Voxtral (tests/tiny_vlm.py), and token logprobs.

Voxtral's text is weak evidence (a steady sound repeats one token), so sounds are told apart by
the first token's log-probability, as the engine's own notes suggest.
"""

from __future__ import annotations

import base64
import io
import math
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from tiny_vlm import VOXTRAL_SAMPLE_RATE, write_voxtral

from pcai_inference import AudioPart, BackendType, GenerateRequest, InferenceBackend, InvalidRequestError

SECONDS = 1.0


def pcm16(kind: str) -> np.ndarray:
    """One second of a test sound as 16-bit samples."""
    t = np.arange(int(VOXTRAL_SAMPLE_RATE * SECONDS)) / VOXTRAL_SAMPLE_RATE
    wave_ = np.sin(2 * np.pi * 440 * t) if kind == "tone" else np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return (0.5 * wave_ * 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(VOXTRAL_SAMPLE_RATE)
        w.writeframes(samples.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def voxtral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(write_voxtral(tmp_path_factory.mktemp("voxtral")))
    yield b
    b.unload()


def first_logprob(backend: InferenceBackend, part: Any) -> float:
    r = backend.chat([{"role": "user", "content": [part, "Transcribe."]}], max_tokens=3, temperature=0.0, logprobs=True)
    assert r.token_logprobs is not None and len(r.token_logprobs) == 3
    assert r.prompt_tokens == 39  # <s> and 38 [STREAMING_PAD]: the realtime model's fixed prompt
    return r.token_logprobs[0]


def test_an_audio_folder_is_detected(voxtral: InferenceBackend) -> None:
    assert voxtral.capabilities == {"text", "audio"}  # type: ignore[attr-defined]


def test_every_form_of_one_sound_gives_the_same_logprob(voxtral: InferenceBackend, tmp_path: Path) -> None:
    samples = pcm16("tone")
    encoded = wav_bytes(samples)
    path = tmp_path / "tone.wav"
    path.write_bytes(encoded)
    b64 = base64.b64encode(encoded).decode()
    forms = {
        "path": AudioPart(path),
        "bytes": AudioPart(encoded),
        "data URL": {"type": "audio", "audio": f"data:audio/wav;base64,{b64}"},
        "OpenAI input_audio": {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
        "float samples": AudioPart((samples / 32768.0).astype(np.float32), sample_rate=VOXTRAL_SAMPLE_RATE),
        "dict samples": {"type": "audio", "audio": samples / 32768.0, "sample_rate": VOXTRAL_SAMPLE_RATE},
    }
    values = {name: first_logprob(voxtral, part) for name, part in forms.items()}
    assert len(set(values.values())) == 1, values
    assert math.isfinite(values["path"]) and values["path"] < 0


def test_different_sounds_change_the_first_token_logprob(voxtral: InferenceBackend) -> None:
    tone, chirp = (AudioPart(wav_bytes(pcm16(kind))) for kind in ("tone", "chirp"))
    assert first_logprob(voxtral, tone) != first_logprob(voxtral, chirp)
    assert first_logprob(voxtral, tone) == first_logprob(voxtral, tone)


def test_concurrent_audio_requests_each_hear_their_own_sound(voxtral: InferenceBackend) -> None:
    """The engine's audio model reads the audio of its last prefilled prompt at every decode step,
    so its requests run one at a time (max_batch 1); concurrent ones each get what they get alone."""
    assert voxtral.max_batch == 1
    parts = [AudioPart(wav_bytes(pcm16(kind))) for kind in ("tone", "chirp", "tone", "chirp")]

    def transcribe(part: AudioPart) -> tuple[float, ...]:
        message = [{"role": "user", "content": [part, "Transcribe."]}]
        r = voxtral.chat(message, max_tokens=8, temperature=0.0, logprobs=True)
        return r.token_logprobs or ()

    alone = [transcribe(part) for part in parts[:2]] * 2
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        assert list(pool.map(transcribe, parts)) == alone


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (AudioPart(b"RIFF but not really a sound"), "not a sound in a known format"),
        (AudioPart(np.zeros(100, np.float32)), r"float samples need sample_rate="),
        (AudioPart(np.array([0.1, np.nan], np.float32), sample_rate=16000), "not finite"),
        (AudioPart(np.zeros((0,), np.float32), sample_rate=16000), r"must be \(n,\) or \(n, channels\)"),
        (AudioPart(b"", None), "empty"),
        (AudioPart(12), "is a int; give a path, bytes"),
    ],
)
def test_bad_audio_is_explained(voxtral: InferenceBackend, part: AudioPart, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        first_logprob(voxtral, part)
    assert first_logprob(voxtral, AudioPart(wav_bytes(pcm16("tone")))) < 0


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number coding (UTF-8's, for numbers below 2^16 here)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    return bytes([0xE0 | n >> 12, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])


def flac_of_silence(frames: int, rate: int = VOXTRAL_SAMPLE_RATE, block: int = 65535) -> bytes:
    """A valid FLAC stream of ``frames`` blocks of silence, each stored as one constant: about
    14 bytes per 65,535 samples, the way a compression bomb packs hours into kilobytes."""
    info = (
        block.to_bytes(2, "big") * 2
        + bytes(6)  # frame sizes unknown
        + ((rate << 44) | (0 << 41) | (15 << 36) | frames * block).to_bytes(8, "big")
        + bytes(16)
    )
    out = b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info
    for i in range(frames):
        head = b"\xff\xf8\x70\x08" + _utf8_number(i) + (block - 1).to_bytes(2, "big")
        head += bytes([_crc8(head)])
        body = head + b"\x00\x00\x00"  # CONSTANT subframe, sample 0
        out += body + _crc16(body).to_bytes(2, "big")
    return out


def test_a_compressed_sound_bomb_is_refused_without_decoding_it_all(voxtral: InferenceBackend) -> None:
    """230 KB of FLAC that decodes to 19 hours (4.4 GB of float samples): refused as longer than an
    hour once decoding passes the hour, not after holding it all."""
    bomb = flac_of_silence(16_700)
    assert len(bomb) < 300_000
    with pytest.raises(InvalidRequestError, match="longer than 3600 seconds"):
        first_logprob(voxtral, AudioPart(bomb))
    # A short stream of the same kind decodes and is heard.
    assert first_logprob(voxtral, AudioPart(flac_of_silence(2))) < 0


def test_models_without_audio_refuse_it(backend: InferenceBackend, voxtral: InferenceBackend) -> None:
    with pytest.raises(InvalidRequestError, match="this model reads text only; it cannot take audio"):
        first_logprob(backend, AudioPart(wav_bytes(pcm16("tone"))))
    with pytest.raises(InvalidRequestError, match="reads text and audio only; it cannot take images"):
        voxtral.chat([{"role": "user", "content": [{"type": "image", "image": np.zeros((8, 8, 3), np.uint8)}]}])


def test_token_logprobs_on_the_real_model(backend: InferenceBackend) -> None:
    req = GenerateRequest(prompt="The capital city of France is", max_tokens=6, temperature=0.0, logprobs=True)
    r = backend.generate(req)
    assert r.token_logprobs is not None and len(r.token_logprobs) == r.tokens_generated == 6
    assert all(math.isfinite(lp) and lp <= 0 for lp in r.token_logprobs)
    assert backend.generate(req).token_logprobs == r.token_logprobs
    assert (
        backend.generate(GenerateRequest(prompt="The capital city of France is", max_tokens=2)).token_logprobs is None
    )
    # A token pushed far ahead of all others by logit_bias has probability ~1.
    forced = backend.generate(
        GenerateRequest(prompt="Hello", max_tokens=1, temperature=1.0, seed=3, logit_bias={9259: 100.0}, logprobs=True)
    )
    assert forced.token_ids == (9259,) and forced.token_logprobs is not None and forced.token_logprobs[0] > -1e-3
    stream = backend.generate_stream(req)
    list(stream)
    assert stream.last is not None and stream.last.token_logprobs == r.token_logprobs
