"""SmolLM2-135M-Instruct (Q4_1 GGUF: Llama architecture, byte-level BPE with the `smollm`
pre-tokenizer, a ChatML template) held to the same rules as the default Gemma 3 model.

Its tokens must be llama.cpp's, and its generation must pass the teacher-forced check against
an exact float64 Llama (tools/llama_exact_greedy.py). The reference data, llama.cpp's ids, is
tests/data/smollm2-135m-reference.json (written by tools/smollm2_reference.py). The model comes
from a PyPI wheel (tools/pypi_models.py, 98 MB, cached).
"""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_teacher_forced_greedy import TOLERANCE, greedy_gaps

from pcai_inference import FinishReason, GenerateRequest, InferenceBackend, StreamChunk
from pcai_inference.mistralrs_backend import MistralRsBackend

from conftest import loaded

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from llama_exact_greedy import ExactLlama
from pypi_models import smollm2

REFERENCE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "data" / "smollm2-135m-reference.json").read_text(encoding="utf-8")
)
TEXTS: list[dict[str, Any]] = REFERENCE["texts"]
PROMPTS: list[dict[str, Any]] = REFERENCE["prompts"]
CHATS = [p for p in PROMPTS if "messages" in p]
# The project's rule, as for Gemma 3: within 0.5 of the exact best (TOLERANCE). On this model it
# is near its noise: Q4_1 products multiply activations rounded to 8 bits, and at the `python`
# prompt's step 20 that rounding alone spreads the gap between two tokens over 0.61 +- 0.58
# (150 emulated draws). With candle's Q8_1 block sums rounded twice (before candle-core 0008)
# our choice there was 1.04 below the exact best; with ggml's rounding it is within 0.5.


@pytest.fixture(scope="module")
def smol() -> Iterator[MistralRsBackend]:
    for b in loaded(smollm2(), max_context=1024):
        assert isinstance(b, MistralRsBackend)
        yield b


@pytest.fixture(scope="module")
def exact() -> ExactLlama:
    return ExactLlama(str(smollm2()))


def greedy(case: dict[str, Any], n: int = 32) -> GenerateRequest:
    return GenerateRequest(
        prompt=case["prompt"], max_tokens=n, temperature=0.0, logprobs=True, parse_special=case["parse_special"]
    )


def test_reference_is_for_this_model() -> None:
    assert hashlib.sha256(smollm2().read_bytes()).hexdigest() == REFERENCE["model_sha256"]
    assert len(TEXTS) >= 40 and len(PROMPTS) >= 10 and len(CHATS) >= 3


@pytest.mark.parametrize("case", TEXTS, ids=[c["id"] for c in TEXTS])
def test_token_ids_match_llama_cpp(smol: InferenceBackend, case: dict[str, Any]) -> None:
    text = case["text"]
    assert smol.tokenize(text, add_special_tokens=True) == case["ids_add_bos"]
    assert smol.tokenize(text, add_special_tokens=False) == case["ids_no_bos"]
    assert smol.tokenize(text, add_special_tokens=False, parse_special=True) == case["ids_special"]
    assert smol.detokenize(case["ids_no_bos"]) == case["detokenized"] == text


@pytest.mark.parametrize("case", PROMPTS, ids=[c["id"] for c in PROMPTS])
def test_prompt_ids_match_llama_cpp(smol: InferenceBackend, case: dict[str, Any]) -> None:
    assert smol.tokenize(case["prompt"], parse_special=case["parse_special"]) == case["prompt_token_ids"]


@pytest.mark.parametrize("case", CHATS, ids=[c["id"] for c in CHATS])
def test_chat_prompts_are_llama_cpps_rendering_of_the_models_template(
    smol: MistralRsBackend, case: dict[str, Any]
) -> None:
    assert smol.chat_template_origin == "model"
    assert smol.chat_prompt_ids(case["messages"]) == case["prompt_token_ids"]


def test_a_greedy_chat_answer_stops_at_the_end_of_its_turn(smol: InferenceBackend) -> None:
    """llama.cpp's greedy answer to this chat ends with <|im_end|> within 32 tokens; ours ends
    there too, and the marker is not part of the text."""
    (case,) = [c for c in CHATS if c["stop_reason"] == "eog" and c["continuation_token_ids"][-1] == 2]
    answer = smol.chat(case["messages"], max_tokens=128, temperature=0.0)
    assert answer.finish_reason is FinishReason.STOP, answer
    assert "<|im_end|>" not in answer.text and answer.text.strip()


@pytest.mark.parametrize("case", PROMPTS, ids=[c["id"] for c in PROMPTS])
def test_every_greedy_choice_is_within_half_a_logit_of_the_exact_best(
    smol: InferenceBackend, exact: ExactLlama, case: dict[str, Any]
) -> None:
    ours, gaps = greedy_gaps(smol, exact, case)
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    ref = case["continuation_token_ids"]
    same = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), min(len(ours), len(ref)))
    print(f"{case['id']}: {len(ours)} tokens, largest gap {gaps[worst]:.4f} at step {worst}; llama.cpp's for {same}")
    assert gaps[worst] <= TOLERANCE, f"step {worst}: chose {ours[worst]}, {gaps[worst]:.3f} below the exact best"


@pytest.mark.parametrize("case", [PROMPTS[0], CHATS[0]], ids=[PROMPTS[0]["id"], CHATS[0]["id"]])
def test_streaming_equals_blocking(smol: InferenceBackend, case: dict[str, Any]) -> None:
    blocking = smol.generate(greedy(case))
    stream = smol.generate_stream(greedy(case))
    text = "".join(chunk.text for chunk in stream)
    assert stream.last is not None and stream.last.token_ids == blocking.token_ids
    assert stream.last.token_logprobs == blocking.token_logprobs
    assert text == blocking.text and len(blocking.token_ids) > 8


def test_a_chat_stream_equals_the_blocking_chat(smol: InferenceBackend) -> None:
    messages = CHATS[-1]["messages"]
    blocking = smol.chat(messages, max_tokens=32, temperature=0.0)
    stream = smol.chat_stream(messages, max_tokens=32, temperature=0.0)
    assert "".join(chunk.text for chunk in stream) == blocking.text
    assert stream.last is not None and stream.last.token_ids == blocking.token_ids


def drained(stream: Iterator[StreamChunk]) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    *_, last = stream
    return last.token_ids, last.token_logprobs


def test_prompts_batched_from_threads_give_their_solo_ids_and_logprobs(smol: InferenceBackend) -> None:
    """With quantized weights a request gets exactly, to the bit, what it gets alone."""
    cases = [c for c in PROMPTS if c["id"] in {"story", "capital", "list", "math", "chat_system", "chat_multi_turn"}]
    assert len({len(c["prompt_token_ids"]) for c in cases}) == len(cases) == 6
    alone = [smol.generate(greedy(c, 24)) for c in cases]
    streams = [smol.generate_stream(greedy(c, 24)) for c in cases]  # all in the engine together
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        together = list(pool.map(drained, streams))
    assert together == [(r.token_ids, r.token_logprobs) for r in alone]
