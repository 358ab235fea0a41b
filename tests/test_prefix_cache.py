"""The engine's prefix cache never changes an answer: a prompt that extends an earlier request's
prompt and output (the next turn of a conversation) gives what it gives on a fresh engine. And
it holds a bounded amount of memory.

Fails on the unpatched engine: engine/patches/mistralrs-core/0003-prefix-cache-reuses-only-computed-rows.patch,
0004-prefix-cache-entries-own-their-rows.patch and 0006-prefix-cache-evicts-on-the-cpu.patch.

The first request of each case generates one token. K/V rows that the engine computed while
decoding differ in the last bits from rows the prefill kernels compute for the same tokens, so
only a cache made by a prompt's prefill can be compared exactly with a fresh engine; the one
generated token is the row a finished sequence never computes, which is what the patch is about.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pcai_inference import GenerateRequest, InferenceBackend

from conftest import PROMPTS, loaded

Outcome = tuple[tuple[int, ...], tuple[float, ...]]


def outcome(backend: InferenceBackend, prompt: str, n: int) -> Outcome:
    r = backend.generate(GenerateRequest(prompt=prompt, max_tokens=n, temperature=0.0, logprobs=True))
    return r.token_ids, r.token_logprobs or ()


@pytest.fixture(scope="module")
def fresh_engine(model_path: Path) -> Iterator[InferenceBackend]:
    """A second engine, whose prefix cache holds nothing the tests' prompts could match."""
    yield from loaded(model_path)


def follow_up_after(backend: InferenceBackend, first_prompt: str, more: str) -> str:
    """Runs a one-token first request on `backend`; returns the next prompt: the first prompt,
    the token it generated, and `more`."""
    (token,), _ = outcome(backend, first_prompt, 1)
    follow_up = first_prompt + backend.detokenize([token]) + more
    start = backend.tokenize(first_prompt)
    assert backend.tokenize(follow_up)[: len(start) + 1] == [*start, token], "the token does not re-tokenize alone"
    return follow_up


def test_a_prompt_extending_a_finished_request_is_exact(
    backend: InferenceBackend, fresh_engine: InferenceBackend
) -> None:
    follow_up = follow_up_after(backend, "A short guide to growing tomatoes on a balcony: first,", " then water")
    assert outcome(backend, follow_up, 16) == outcome(fresh_engine, follow_up, 16)


def test_a_prompt_extending_one_longer_than_the_sliding_window_is_exact(
    backend: InferenceBackend, fresh_engine: InferenceBackend
) -> None:
    """Gemma 3 270M's local layers keep a 512-token window; a cached sequence past it has dropped
    tokens, and extending it must not reuse that cache with masks built for the full past."""
    items = " ".join(f"Item {i}: the budget line was reviewed." for i in range(60))
    first_prompt = "Notes from a long meeting. " + items
    assert len(backend.tokenize(first_prompt)) > 512
    follow_up = follow_up_after(backend, first_prompt, " In summary, the")
    assert outcome(backend, follow_up, 8) == outcome(fresh_engine, follow_up, 8)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_finished_requests_leave_only_their_rows_in_the_prefix_cache(fresh_engine: InferenceBackend) -> None:
    """Each finished request stays in the engine's prefix cache; its entry must hold its own rows
    (about 36 KiB a token here), not the 512-row buffer of the step it ran in (about 19 MiB).
    Fails without engine/patches/mistralrs-core/0004-prefix-cache-entries-own-their-rows.patch."""
    from test_soak import rss_mib

    fresh_engine.generate("Warm-up", max_tokens=2)
    before = rss_mib()
    for i in range(24):
        fresh_engine.generate(f"Request number {i} asks about topic {i * 7}:", max_tokens=8, temperature=0.0)
    grown = rss_mib() - before
    print(f"24 finished requests: RSS {grown:+.0f} MiB")
    assert grown < 150


MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd")
MALLINFO2_FIELDS += ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


def heap_in_use_mib() -> float:
    """What malloc has handed out and not had back (glibc's mallinfo2: arena in use + mmapped).
    Unlike RSS, it drops as soon as memory is freed, whatever the allocator keeps for reuse."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return float(info.uordblks + info.hblkhd) / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's mallinfo2")
def test_the_prefix_cache_keeps_at_most_its_limit_of_entries(fresh_engine: InferenceBackend) -> None:
    """The engine keeps 16 finished requests for reuse (src/model.rs); on the CPU the unpatched
    engine never evicted one, so memory grew with every distinct request."""
    text = " ".join(PROMPTS * 8)  # about 490 tokens: short of the 512-token sliding window, so cached
    assert 480 < len(fresh_engine.tokenize(f"Note 31. {text}")) < 500
    fresh_engine.generate("Warm-up", max_tokens=2)
    before = heap_in_use_mib()
    for i in range(32):
        fresh_engine.generate(f"Note {i}. {text}", max_tokens=4)
    grown = heap_in_use_mib() - before
    # An entry holds ~490 rows of 36 KiB: 16 entries are ~275 MiB, 32 would be ~550 MiB.
    print(f"32 distinct ~490-token requests: heap in use {grown:+.0f} MiB")
    assert grown < 400
