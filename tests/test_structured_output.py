"""Structured output: answers that follow a JSON schema, a regex or a Lark grammar, enforced by
the engine's constrained decoding on every path (blocking, streaming, async, seeded, batched).

Without engine/patches/mistralrs-core/0020 these fail: the engine sampled before it masked, so
our token picker reported a rejected token and then the allowed one (the texts do not parse),
and a finished grammar ended on a token that is not the model's end of turn.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from pcai_inference import FinishReason, GenerateRequest, InferenceBackend, InvalidRequestError

from conftest import loaded

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "enum": ["Paris", "Rome", "Tokyo"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}

PROMPT = "Here is a person described as JSON:"


def person(**params: Any) -> GenerateRequest:
    base: dict[str, Any] = dict(prompt=PROMPT, max_tokens=96, temperature=0.0, response_format=PERSON)
    base.update(params)
    return GenerateRequest(**base)


def valid(text: str, schema: dict[str, Any] = PERSON) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


@pytest.fixture(scope="module")
def batching(model_path: Path) -> Iterator[InferenceBackend]:
    yield from loaded(model_path, max_batch=8)


def test_a_greedy_answer_parses_and_validates(batching: InferenceBackend) -> None:
    r = batching.generate(person())
    assert r.finish_reason is FinishReason.STOP, r
    valid(r.text)
    # Without the schema the model writes something else (the schema did the work).
    free = batching.generate(person(response_format=None, max_tokens=24))
    with pytest.raises(ValueError):
        valid(free.text)


def test_openai_forms_of_response_format(batching: InferenceBackend) -> None:
    wrapped = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    assert batching.generate(person(response_format=wrapped)).text == batching.generate(person()).text
    # json_object is any JSON object: the schema {"type": "object"}.
    r = batching.generate(person(response_format={"type": "json_object"}, max_tokens=32))
    assert r.text.startswith("{")
    assert r.token_ids == batching.generate(person(response_format={"type": "object"}, max_tokens=32)).token_ids
    plain = batching.generate(person(response_format={"type": "text"}, max_tokens=16))
    assert plain.text == batching.generate(person(response_format=None, max_tokens=16)).text


def test_streaming_and_async_equal_blocking(batching: InferenceBackend) -> None:
    blocking = batching.generate(person())
    streamed = "".join(c.text for c in batching.generate_stream(person()))
    assert streamed == blocking.text

    async def both() -> tuple[str, str]:
        r = await batching.agenerate(person())
        parts = [c.text async for c in batching.agenerate_stream(person())]
        return r.text, "".join(parts)

    assert asyncio.run(both()) == (blocking.text, blocking.text)


def test_sampled_answers_validate_and_repeat_with_their_seed(batching: InferenceBackend) -> None:
    requests = [person(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=s) for s in range(6)]
    alone = [batching.generate(r) for r in requests]
    for r in alone:
        assert r.finish_reason is FinishReason.STOP, r
        valid(r.text)
    assert len({r.text for r in alone}) > 1, "sampling under the schema varies with the seed"
    # Batched: all six at once, each equal to itself alone.
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(batching.generate, requests))
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_constrained_and_free_requests_share_a_batch(batching: InferenceBackend) -> None:
    free = GenerateRequest(prompt="The capital city of France is", max_tokens=24, temperature=0.0)
    free_alone = batching.generate(free)
    constrained_alone = batching.generate(person())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(batching.generate, [free, person(), free, person()]))
    assert [r.token_ids for r in results] == [free_alone.token_ids, constrained_alone.token_ids] * 2


def test_a_regex_and_a_lark_grammar_are_matched(batching: InferenceBackend) -> None:
    date = r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r = batching.generate("The Apollo 11 landing date was", regex=date, max_tokens=16, temperature=0.0)
    assert r.finish_reason is FinishReason.STOP
    assert re.fullmatch(date, r.text), r.text
    lark = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"'
    r = batching.generate("Is water wet?", grammar=lark, max_tokens=16, temperature=0.0)
    assert r.finish_reason is FinishReason.STOP
    assert r.text in ("The answer is yes.", "The answer is no."), r.text


def test_a_cut_answer_ends_with_length(batching: InferenceBackend) -> None:
    r = batching.generate(person(max_tokens=5))
    assert r.finish_reason is FinishReason.LENGTH
    assert r.tokens_generated == 5
    # The beginning of the whole answer (greedy: the same tokens).
    assert batching.generate(person()).text.startswith(r.text)


def test_log_probabilities_are_taken_under_the_grammar(batching: InferenceBackend) -> None:
    r = batching.generate(person(logprobs=True, top_logprobs=3))
    assert r.token_logprobs is not None and r.top_logprobs is not None
    assert len(r.top_logprobs) == len(r.token_ids)
    for chosen, logprob, top in zip(r.token_ids, r.token_logprobs, r.top_logprobs, strict=True):
        # Greedy: the chosen token is the most likely allowed one.
        assert top[0] == (chosen, logprob)
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(top))
    # At the first step the grammar allows only the opening of an object (after any spaces):
    # every alternative reported is such a token, however likely other text was.
    first = [batching.detokenize([t]) for t, _ in r.top_logprobs[0]]
    assert all(t.strip() == "" or t.lstrip().startswith("{") for t in first), first
    assert sum(math.exp(p) for _, p in r.top_logprobs[0]) <= 1.0 + 1e-5


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"response_format": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}, "schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema"),
        ({"response_format": {"type": "json_thing"}}, "response_format"),
        ({"regex": "(unclosed"}, "regex"),
        ({"grammar": "start: undefined_rule"}, "grammar"),
        ({"regex": "a", "grammar": 'start: "a"'}, "at most one"),
        ({"top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_grammars_fail_before_anything_is_generated(
    batching: InferenceBackend, fields: dict[str, Any], needle: str
) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        stream = batching.generate_stream(GenerateRequest(prompt=PROMPT, max_tokens=8, **fields))
        next(iter(stream))


def test_keyword_overrides_keep_the_schema(batching: InferenceBackend) -> None:
    """Keywords given beside a request (`generate(request, seed=...)`) copy it; the copy keeps its
    grammar (the OpenAI form included)."""
    wrapped = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    request = person(response_format=wrapped, temperature=0.8)
    for seed in range(3):
        r = batching.generate(request, seed=seed)
        assert r.finish_reason is FinishReason.STOP
        valid(r.text)
