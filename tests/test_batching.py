"""Concurrent requests run batched in one engine, and each gets exactly what it gets alone.

These tests fail on the unpatched engine (mistralrs 0.8.1): its batched decode attention mixed
the rows of a batch (engine/patches/mistralrs-core/0001-batched-decode-attention.patch), and its
scheduler let a burst of requests past the batch limit and restarted a sequence at its prompt
when the others in its step ended (0002-scheduler-limit-and-resume).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from pcai_inference import BackendType, FinishReason, GenerateRequest, InferenceBackend, StreamChunk

from conftest import PROMPTS, loaded

# Twice the first prompt: two rows of the very same length are certain to share decode steps.
BATCH = [PROMPTS[0], *PROMPTS[:7]]


def greedy(prompt: str, n: int = 24) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, max_tokens=n, temperature=0.0, logprobs=True)


Outcome = tuple[tuple[int, ...], tuple[float, ...]]


def solo(backend: InferenceBackend, prompt: str, n: int = 24) -> Outcome:
    r = backend.generate(greedy(prompt, n))
    assert r.token_logprobs is not None
    return r.token_ids, r.token_logprobs


def drained(stream: Iterator[StreamChunk]) -> Outcome:
    *_, last = stream
    assert last.token_ids is not None and last.token_logprobs is not None
    return last.token_ids, last.token_logprobs


@pytest.fixture(scope="module")
def batching(model_path: Path) -> Iterator[InferenceBackend]:
    yield from loaded(model_path, max_batch=8)


@pytest.fixture(scope="module")
def alone(batching: InferenceBackend) -> dict[str, Outcome]:
    return {p: solo(batching, p) for p in dict.fromkeys(BATCH)}


def test_the_batch_holds_equal_and_unequal_token_lengths(backend: InferenceBackend) -> None:
    lengths = [len(backend.tokenize(p)) for p in BATCH]
    assert len(set(lengths)) > 1
    assert len(set(lengths)) < len(lengths), lengths


def test_batching_is_on_by_default(backend: InferenceBackend, batching: InferenceBackend) -> None:
    assert (backend.max_batch, batching.max_batch) == (8, 8)


def test_eight_prompts_from_threads_give_their_solo_ids_and_logprobs(
    batching: InferenceBackend, alone: dict[str, Outcome]
) -> None:
    # Every stream is submitted before any is read, so all eight are in the engine together.
    streams = [batching.generate_stream(greedy(p)) for p in BATCH]
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        together = list(pool.map(drained, streams))
    assert together == [alone[p] for p in BATCH]


def test_eight_prompts_from_asyncio_give_their_solo_ids_and_logprobs(
    batching: InferenceBackend, alone: dict[str, Outcome]
) -> None:
    async def run() -> list[Outcome]:
        results = await asyncio.gather(*(batching.agenerate(greedy(p)) for p in BATCH))
        return [(r.token_ids, r.token_logprobs or ()) for r in results]

    assert asyncio.run(run()) == [alone[p] for p in BATCH]


def test_a_stream_cancelled_mid_batch_leaves_the_others_exact(
    batching: InferenceBackend, alone: dict[str, Outcome]
) -> None:
    prompts = BATCH[:4]
    streams = [batching.generate_stream(greedy(p)) for p in prompts]
    leaver = streams.pop(1)
    for _ in range(3):
        next(leaver)
    leaver.close()
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        stayed = list(pool.map(drained, streams))
    assert stayed == [alone[p] for p in prompts[:1] + prompts[2:]]
    assert leaver.last is not None and leaver.last.finish_reason is FinishReason.CANCELLED


def test_a_request_arriving_mid_batch_joins_and_all_stay_exact(
    batching: InferenceBackend, alone: dict[str, Outcome]
) -> None:
    early = [batching.generate_stream(greedy(p)) for p in BATCH[:3]]
    for stream in early:  # all three are decoding
        next(stream)
    late = batching.generate_stream(greedy(BATCH[5]))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(drained, [*early, late]))
    assert results == [alone[p] for p in [*BATCH[:3], BATCH[5]]]


def test_requests_of_different_lengths_give_their_solo_logprobs(batching: InferenceBackend) -> None:
    """The longer request keeps decoding after the shorter one ends, exactly as it would alone."""
    prompt = PROMPTS[0]
    longer = solo(batching, prompt, 30)
    streams = [batching.generate_stream(greedy(prompt, n)) for n in (24, 30)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        shorter_result, longer_result = pool.map(drained, streams)
    assert longer_result == longer
    assert shorter_result == (longer[0][:24], longer[1][:24])


def test_decoding_sequences_of_different_lengths_share_each_step(batching: InferenceBackend) -> None:
    """A long prompt arrives while a short one decodes: from then on the two advance together, a
    token each in turn, both exact; neither waits for the other to reach its length (a scheduler
    that lets the shorter catch up alone would give it some 60 tokens first). The unpatched
    engine passes this too, by alternating steps between the two lengths; that the rows now
    share each step shows in bench/run.py's concurrent loads, not in a test."""
    short_prompt, long_prompt, n_long = PROMPTS[3], " ".join(PROMPTS), 12
    assert len(batching.tokenize(long_prompt)) - len(batching.tokenize(short_prompt)) > 40
    short_alone = solo(batching, short_prompt, 160)
    long_alone = solo(batching, long_prompt, n_long)
    delivered: list[str] = []
    lock = threading.Lock()

    def consume(tag: str, stream: Iterator[StreamChunk]) -> Outcome:
        for chunk in stream:
            with lock:
                delivered.append(tag)
            if chunk.is_last:
                assert chunk.token_ids is not None and chunk.token_logprobs is not None
                return chunk.token_ids, chunk.token_logprobs
        raise AssertionError("the stream ended without a last chunk")

    short = batching.generate_stream(greedy(short_prompt, 160))
    for _ in range(3):
        next(short)
    long = batching.generate_stream(greedy(long_prompt, n_long))
    with ThreadPoolExecutor(max_workers=2) as pool:
        short_result, long_result = pool.map(consume, ["short", "long"], [short, long])
    assert (short_result, long_result) == (short_alone, long_alone)
    first, last = delivered.index("long"), len(delivered) - 1 - delivered[::-1].index("long")
    short_during_long = delivered[first:last].count("short")
    assert short_during_long <= n_long + 4, delivered


def test_rows_crossing_the_sliding_window_stay_exact(batching: InferenceBackend) -> None:
    """Gemma 3's local layers keep the last 512 keys: a row passing that length while a short one
    decodes beside it drops its oldest keys as it does alone."""
    long_prompt = " ".join(PROMPTS * 8 + PROMPTS[:2])
    length = len(batching.tokenize(long_prompt))
    assert 490 < length < 512, length
    expected = [solo(batching, long_prompt, 40), solo(batching, PROMPTS[1], 40)]
    streams = [batching.generate_stream(greedy(p, 40)) for p in (long_prompt, PROMPTS[1])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(drained, streams)) == expected


@pytest.fixture(scope="module")
def pair_backend(model_path: Path) -> Iterator[InferenceBackend]:
    yield from loaded(model_path, max_batch=2, max_context=512)


def test_the_engine_runs_no_more_than_max_batch(pair_backend: InferenceBackend) -> None:
    """With max_batch=2, requests 3 and 4 of a burst start only after one of the first two ended."""
    assert pair_backend.max_batch == 2
    prompt, n = PROMPTS[3], 16
    expected = solo(pair_backend, prompt, n)
    events: list[tuple[float, str, int]] = []
    lock = threading.Lock()

    def consume(i: int, stream: Iterator[StreamChunk]) -> Outcome:
        first = True
        for chunk in stream:
            if first or chunk.is_last:
                with lock:
                    events.append((time.monotonic(), "first" if first else "end", i))
                first = False
            if chunk.is_last:
                assert chunk.token_ids is not None and chunk.token_logprobs is not None
                return chunk.token_ids, chunk.token_logprobs
        raise AssertionError("the stream ended without a last chunk")

    streams = [pair_backend.generate_stream(greedy(prompt, n)) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(consume, range(4), streams))
    assert results == [expected] * 4
    events.sort()
    first_end = next(t for t, kind, _ in events if kind == "end")
    started_before = [i for t, kind, i in events if kind == "first" and t < first_end]
    assert len(started_before) <= 2, events


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4", 1000])
def test_max_batch_must_be_a_positive_int(model_path: Path, bad: object) -> None:
    from pcai_inference import InvalidRequestError

    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(InvalidRequestError, match="max_batch"):
        b.load_model(model_path, max_batch=bad)  # type: ignore[arg-type]
