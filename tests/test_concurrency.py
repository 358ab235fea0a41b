"""One backend, many threads; the GIL is free while the engine works; Ctrl-C interrupts."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pcai_inference import GenerateRequest, InferenceBackend

from conftest import PROMPTS


def greedy(prompt: str, n: int = 24) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, max_tokens=n, temperature=0.0)


def test_prompts_include_equal_token_lengths(backend: InferenceBackend) -> None:
    lengths = [len(backend.tokenize(p)) for p in PROMPTS]
    assert len(set(lengths)) < len(lengths), f"no two prompts share a token length: {lengths}"


def test_eight_threads_match_solo_runs(backend: InferenceBackend) -> None:
    solo = [backend.generate(greedy(p)).text for p in PROMPTS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda p: backend.generate(greedy(p)).text, PROMPTS))
    assert threaded == solo


def test_same_prompt_from_eight_threads(backend: InferenceBackend) -> None:
    """Eight identical prompts are batched together: the classic equal-length case."""
    solo = backend.generate(greedy(PROMPTS[0])).text
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda _: backend.generate(greedy(PROMPTS[0])).text, range(8)))
    assert threaded == [solo] * 8


def test_seeded_sampling_is_the_same_alone_and_batched(backend: InferenceBackend) -> None:
    req = GenerateRequest(prompt=PROMPTS[2], max_tokens=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=11)
    solo = backend.generate(req).text
    with ThreadPoolExecutor(max_workers=4) as pool:
        batched = list(pool.map(lambda _: backend.generate(req).text, range(4)))
    assert batched == [solo] * 4


def test_gil_is_released_during_generate(backend: InferenceBackend) -> None:
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.monotonic()
    backend.generate(greedy(PROMPTS[0], 64))
    elapsed = time.monotonic() - start
    stop.set()
    t.join()
    # The ticker can tick about 900 times a second; with the GIL held by generate it could not
    # tick at all while the engine works.
    assert ticks >= 100 * elapsed, f"{ticks} ticks in {elapsed:.2f}s"


def interrupt_after(seconds: float) -> list[float]:
    """Sends SIGINT to this (the main) thread after ``seconds``; the list receives the time."""
    main = threading.get_ident()
    sent_at: list[float] = []

    def interrupt() -> None:
        time.sleep(seconds)
        sent_at.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    return sent_at


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_ctrl_c_interrupts_a_blocking_generate(backend: InferenceBackend) -> None:
    sent_at = interrupt_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        backend.generate("Once upon a time", max_tokens=5000, temperature=0.0)
    delay = time.monotonic() - sent_at[0]
    assert delay < 1.5, f"KeyboardInterrupt came {delay:.2f}s after SIGINT"
    # The backend still works afterwards.
    assert backend.generate("Hello", max_tokens=3, temperature=0.0).tokens_generated == 3
    assert os.getpid() > 0


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_ctrl_c_interrupts_a_long_prefill(backend: InferenceBackend) -> None:
    """SIGINT one second into a ~1,500-token prompt (about ten seconds of prefill here) raises
    KeyboardInterrupt at once; the engine drops the request and answers the next one exactly."""
    expected = backend.generate("Hello", max_tokens=3, temperature=0.0).text
    prompt = "word " * 1500
    assert len(backend.tokenize(prompt)) > 1400
    start = time.monotonic()
    sent_at = interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        backend.generate(prompt, max_tokens=5, temperature=0.0)
    delay = time.monotonic() - sent_at[0]
    assert delay < 1.5, f"KeyboardInterrupt came {delay:.2f}s after SIGINT"
    assert sent_at[0] - start < 2.0
    assert backend.generate("Hello", max_tokens=3, temperature=0.0).text == expected
