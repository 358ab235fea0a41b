"""Streaming: deltas add up to the blocking text, the last chunk carries the figures, and
leaving the loop early stops the engine."""

from __future__ import annotations

import pytest

from pcai_inference import FinishReason, GenerateRequest, InferenceBackend

PROMPTS = [
    "The history of the Roman Empire began",
    "日本の首都は東京です。東京は",
    "Emoji story: 🐶🐱🐭 then",
    "Ünïcödé façade — naïve café,",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stream_equals_blocking_text(backend: InferenceBackend, prompt: str) -> None:
    req = GenerateRequest(prompt=prompt, max_tokens=40, temperature=0.0)
    blocking = backend.generate(req)
    chunks = list(backend.generate_stream(req))
    assert "".join(c.text for c in chunks).encode() == blocking.text.encode()
    for c in chunks:
        assert "\ufffd" not in c.text, f"broken character in chunk {c.text!r}"
    last = chunks[-1]
    assert last.is_last and all(not c.is_last for c in chunks[:-1])
    assert last.finish_reason is blocking.finish_reason
    assert last.tokens_generated == blocking.tokens_generated
    assert last.prompt_tokens == blocking.prompt_tokens
    assert last.timings is not None


def test_multibyte_output_is_whole_characters(backend: InferenceBackend) -> None:
    """Some prompt must yield non-ASCII output, and every chunk of it is valid text."""
    seen_non_ascii = False
    for prompt in PROMPTS[1:]:
        req = GenerateRequest(prompt=prompt, max_tokens=40, temperature=0.0)
        chunks = [c.text for c in backend.generate_stream(req)]
        joined = "".join(chunks)
        seen_non_ascii |= any(ord(ch) > 127 for ch in joined)
        assert "\ufffd" not in joined
    assert seen_non_ascii


def test_many_chunks_not_one(backend: InferenceBackend) -> None:
    chunks = list(backend.generate_stream("The history of the Roman Empire began", max_tokens=32, temperature=0.0))
    assert len(chunks) > 8


def test_break_cancels_in_the_engine(backend: InferenceBackend) -> None:
    stream = backend.generate_stream("Once upon a time", max_tokens=2000, temperature=0.0)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    assert stream.last is not None and stream.last.finish_reason is FinishReason.CANCELLED
    released = stream._generation.wait_engine_release(60.0)  # type: ignore[attr-defined]
    assert released is not None, "the engine still runs a cancelled request"
    assert released < 20, f"the engine sampled {released} tokens for a request cancelled after 3 chunks"


def test_dropping_the_stream_cancels(backend: InferenceBackend) -> None:
    stream = backend.generate_stream("Once upon a time", max_tokens=2000, temperature=0.0)
    native = stream._generation  # type: ignore[attr-defined]
    next(stream)
    del stream
    assert native.done
    released = native.wait_engine_release(60.0)
    assert released is not None and released < 20


def test_context_manager_closes(backend: InferenceBackend) -> None:
    with backend.generate_stream("Once upon a time", max_tokens=2000, temperature=0.0) as stream:
        next(stream)
    assert stream.last is not None and stream.last.finish_reason is FinishReason.CANCELLED
    # The next request is served normally.
    assert backend.generate("Hello", max_tokens=3, temperature=0.0).tokens_generated == 3


def test_stop_sequence_in_stream(backend: InferenceBackend) -> None:
    full = backend.generate("The history of the Roman Empire began", max_tokens=40, temperature=0.0).text
    stop = full.split()[len(full.split()) // 2]
    chunks = list(
        backend.generate_stream("The history of the Roman Empire began", max_tokens=40, temperature=0.0, stop=[stop])
    )
    assert "".join(c.text for c in chunks) == full[: full.index(stop)]
    assert chunks[-1].finish_reason is FinishReason.STOP_SEQUENCE
