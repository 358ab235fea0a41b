"""Blocking generation on the real model: fields, limits, stop strings, determinism."""

from __future__ import annotations

import pytest

from pcai_inference import FinishReason, GenerateRequest, GenerateResponse, InferenceBackend

PROMPT = "The history of the Roman Empire began"


def greedy(backend: InferenceBackend, prompt: str = PROMPT, n: int = 24, **kw: object) -> GenerateResponse:
    return backend.generate(GenerateRequest(prompt=prompt, max_tokens=n, temperature=0.0, **kw))  # type: ignore[arg-type]


def test_response_fields(backend: InferenceBackend) -> None:
    r = greedy(backend)
    assert isinstance(r.text, str) and r.text
    assert r.tokens_generated == 24
    assert r.prompt_tokens == len(backend.tokenize(PROMPT))
    assert r.finish_reason is FinishReason.LENGTH
    assert len(r.token_ids) == 24
    prompt_ids = backend.tokenize(PROMPT)
    assert backend.detokenize(prompt_ids + list(r.token_ids), skip_special_tokens=True).endswith(r.text)
    t = r.timings
    assert t.prompt_seconds > 0 and t.decode_seconds > 0
    assert t.total_seconds >= t.prompt_seconds
    assert t.decode_tokens_per_second > 0 and t.prompt_tokens_per_second > 0


def test_keyword_shortcut_equals_request(backend: InferenceBackend) -> None:
    a = backend.generate(PROMPT, max_tokens=16, temperature=0.0)
    b = greedy(backend, n=16)
    assert a.text == b.text and a.tokens_generated == 16


def test_request_plus_overrides(backend: InferenceBackend) -> None:
    req = GenerateRequest(prompt=PROMPT, max_tokens=50, temperature=0.0)
    assert backend.generate(req, max_tokens=5).tokens_generated == 5


@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_max_tokens_is_exact(backend: InferenceBackend, n: int) -> None:
    r = greedy(backend, n=n)
    assert r.tokens_generated == n
    assert r.finish_reason is FinishReason.LENGTH


def test_greedy_is_deterministic(backend: InferenceBackend) -> None:
    runs = {greedy(backend, n=32).text for _ in range(3)}
    assert len(runs) == 1


def test_stop_sequence_cuts_before_the_stop_string(backend: InferenceBackend) -> None:
    full = greedy(backend, n=48).text
    # A stop string taken from the middle of the greedy text, where it first occurs.
    words = [w for w in full.split(" ") if len(w) >= 3]
    assert words, f"greedy text has no word to stop on: {full!r}"
    stop = words[len(words) // 2]
    cut = full.index(stop)
    r = greedy(backend, n=48, stop=[stop])
    assert r.finish_reason is FinishReason.STOP_SEQUENCE
    assert r.text == full[:cut]
    assert stop not in r.text
    assert r.tokens_generated < 48


def test_stop_string_never_seen_runs_to_length(backend: InferenceBackend) -> None:
    r = greedy(backend, n=10, stop=["\u2603\u2603never\u2603\u2603"])
    assert r.finish_reason is FinishReason.LENGTH and r.tokens_generated == 10


def test_end_of_generation_token_gives_stop(backend: InferenceBackend) -> None:
    """When the model emits its end token (made certain here with logit_bias), the result is STOP
    and the end token is neither counted nor in the text."""
    eos = backend.tokenize("<eos>", add_special_tokens=False, parse_special=True)
    assert eos == [1]
    r = greedy(backend, n=50, logit_bias={1: 100.0})
    assert r.finish_reason is FinishReason.STOP
    assert r.tokens_generated == 0 and r.text == ""
    # <end_of_turn> ends generation too.
    end_of_turn = backend.tokenize("<end_of_turn>", add_special_tokens=False, parse_special=True)
    r = greedy(backend, n=50, logit_bias={end_of_turn[0]: 100.0})
    assert r.finish_reason is FinishReason.STOP and r.tokens_generated == 0


def test_logit_bias_forces_and_bans_tokens(backend: InferenceBackend) -> None:
    plain = greedy(backend, n=8)
    first = backend.tokenize(plain.text, add_special_tokens=False)[0]
    banned = greedy(backend, n=8, logit_bias={first: float("-inf")})
    assert backend.tokenize(banned.text, add_special_tokens=False)[0] != first
    word = backend.tokenize(" banana", add_special_tokens=False)
    assert len(word) == 1
    forced = greedy(backend, n=3, logit_bias={word[0]: 100.0})
    assert forced.text == " banana banana banana"
