"""Bad input gives a typed error with a message that says what to do; nothing crashes."""

from __future__ import annotations

import math

import pytest

from pcai_inference import (
    GenerateRequest,
    InferenceBackend,
    InvalidRequestError,
    PcaiError,
)

BAD_PARAMS = [
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 2.0}, "min_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["ok", ""]}, "stop"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"presence_penalty": math.nan}, "presence_penalty"),
    ({"frequency_penalty": 10.0}, "frequency_penalty"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"seed": 1.5}, "seed"),
    ({"stop": [1, 2]}, "stop"),
    ({"logit_bias": {10**9: 1.0}}, "logit_bias"),
    ({"logit_bias": {-1: 1.0}}, "logit_bias"),
    ({"logit_bias": {5: "x"}}, "logit_bias"),
    ({"logit_bias": {5: math.nan}}, "logit_bias"),
]


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_parameter_is_invalid_request(backend: InferenceBackend, params: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        backend.generate("Hello", **params)
    assert field in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, PcaiError)


def test_empty_prompt(backend: InferenceBackend) -> None:
    with pytest.raises(InvalidRequestError, match="empty"):
        backend.generate("", max_tokens=4)


def test_prompt_and_messages_are_exclusive() -> None:
    with pytest.raises(InvalidRequestError, match="exactly one"):
        GenerateRequest(prompt="a", messages=({"role": "user", "content": "b"},))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="exactly one"):
        GenerateRequest()


def test_unknown_keyword(backend: InferenceBackend) -> None:
    with pytest.raises(InvalidRequestError, match="temprature"):
        backend.generate("Hello", temprature=0.5)


def test_prompt_longer_than_the_context_window(backend: InferenceBackend) -> None:
    window = backend.context_window  # type: ignore[attr-defined]
    prompt = "hello " * (window + 100)
    n = len(backend.tokenize(prompt))
    assert n > window
    with pytest.raises(InvalidRequestError) as e:
        backend.generate(prompt, max_tokens=4)
    assert str(n) in str(e.value) and str(window) in str(e.value)


def test_bad_token_ids_in_detokenize(backend: InferenceBackend) -> None:
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        backend.detokenize([10**9])


def test_backend_survives_all_of_the_above(backend: InferenceBackend) -> None:
    assert backend.generate("Hello", max_tokens=3, temperature=0.0).tokens_generated == 3
