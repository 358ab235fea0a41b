"""Faults under load: many streams at once with half of them abandoned, unload() and a second
load while threads generate, and repeated load/unload cycles.

    PCAI_SOAK_STREAMS=256 PCAI_SOAK_CYCLES=50 pytest tests/test_soak.py   # longer (CI: 64, 20)
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from pcai_inference import BackendType, GenerateRequest, InferenceBackend, ModelClosedError

from conftest import PROMPTS

STREAMS = int(os.environ.get("PCAI_SOAK_STREAMS", "64"))
CYCLES = int(os.environ.get("PCAI_SOAK_CYCLES", "20"))
TOKENS = 8
# RSS may stay this far above where a soak started (freed memory the allocator keeps);
# measured +40 to +98 MiB after rounds of 64 streams (was +850 before unused memory was
# returned at idle and malloc arenas were capped).
STREAM_SLACK_MIB = 200
# Issue 7's target for 20 load/unload cycles.
CYCLE_SLACK_MIB = 50

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def settled_rss_mib() -> float:
    """RSS once the engine is idle: abandoned streams end in the engine at its next step, and
    the memory they freed goes back to the system when the last generation ends (and again
    200 ms later), so a read taken at once can catch their work still running."""
    time.sleep(1.0)
    return rss_mib()


def request(i: int) -> GenerateRequest:
    return GenerateRequest(prompt=PROMPTS[i % len(PROMPTS)], max_tokens=TOKENS, temperature=0.0)


def test_many_streams_half_abandoned_give_the_sequential_text(backend: InferenceBackend) -> None:
    """Half the streams (threads and asyncio tasks alike) are left after their first piece;
    the others give exactly the sequential text, twice over, nothing hangs, and memory comes
    back near where it started."""
    expected = [backend.generate(request(i)).text for i in range(len(PROMPTS))]
    before = settled_rss_mib()
    run_streams(backend, expected)
    after_first = settled_rss_mib()
    run_streams(backend, expected)
    after_second = settled_rss_mib()
    print(
        f"{STREAMS} streams: RSS {before:.0f} MiB, after round 1 {after_first - before:+.0f}, "
        f"after round 2 {after_second - before:+.0f}"
    )
    assert after_first - before < STREAM_SLACK_MIB
    assert after_second - before < STREAM_SLACK_MIB


def test_load_unload_cycles_give_memory_back(model_path: Path) -> None:
    """RSS after the last of CYCLES load/generate/unload cycles is within 50 MiB of where it
    was after the first (measured: -6 to +27 MiB over 20 cycles)."""
    b = BackendType.MISTRALRS.create(device="cpu")
    texts: list[str] = []

    def cycle() -> None:
        b.load_model(model_path, max_context=2048)
        texts.append(b.generate(request(0)).text)
        b.unload()

    cycle()
    baseline = rss_mib()
    for _ in range(CYCLES - 1):
        cycle()
    growth = rss_mib() - baseline
    print(f"{CYCLES} load/unload cycles: RSS {baseline:.0f} MiB after the first, {growth:+.0f} after the last")
    assert len(set(texts)) == 1
    assert growth < CYCLE_SLACK_MIB


def test_a_backend_dropped_without_unload_frees_its_model(model_path: Path) -> None:
    """Garbage-collecting a loaded backend frees the model and returns the memory, as
    unload() would (on a thread of its own, so the collector does not wait)."""
    before = rss_mib()
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path, max_context=2048)
    b.generate(request(0))
    loaded = rss_mib()
    del b
    gc.collect()
    deadline = time.monotonic() + 30
    while rss_mib() > before + CYCLE_SLACK_MIB and time.monotonic() < deadline:
        time.sleep(0.1)
    print(
        f"dropped backend: RSS {before:.0f} MiB before, {loaded - before:+.0f} loaded, {rss_mib() - before:+.0f} after"
    )
    assert rss_mib() - before < CYCLE_SLACK_MIB


def test_unload_while_threads_generate(model_path: Path) -> None:
    """unload() while eight threads generate (streaming or blocking): each one either finishes
    with the full greedy text or ends with ModelClosedError after a prefix of it; none hangs,
    and the backend loads and answers again afterwards."""
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path, max_context=2048)
    long = [GenerateRequest(prompt=p, max_tokens=48, temperature=0.0) for p in PROMPTS]
    expected = [b.generate(r).text for r in long]
    outcomes: dict[int, tuple[str, str]] = {}
    first_piece = threading.Event()

    def worker(i: int) -> None:
        text = ""
        try:
            if i % 2:
                outcomes[i] = ("finished", b.generate(long[i % len(long)]).text)
                return
            for chunk in b.generate_stream(long[i % len(long)]):
                text += chunk.text
                first_piece.set()
            outcomes[i] = ("finished", text)
        except ModelClosedError as e:
            assert "load it again" in str(e)
            outcomes[i] = ("closed", text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    assert first_piece.wait(120)
    b.unload()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a generation hung after unload()"
    assert len(outcomes) == 8
    assert any(kind == "closed" for kind, _ in outcomes.values())
    for i, (kind, text) in outcomes.items():
        full = expected[i % len(expected)]
        assert text == full if kind == "finished" else full.startswith(text), (i, kind, text)
    b.load_model(model_path, max_context=2048)
    assert b.generate(long[0]).text == expected[0]
    b.unload()


def test_loading_a_second_model_while_the_first_generates(model_path: Path) -> None:
    """A second backend loads the model while the first generates: both give their sequential
    greedy text. Then load_model on the busy first backend replaces its model; the generation
    running on the old one finishes or ends with ModelClosedError, never a crash or a hang."""
    first = BackendType.MISTRALRS.create(device="cpu")
    first.load_model(model_path, max_context=2048)
    long = GenerateRequest(prompt=PROMPTS[2], max_tokens=96, temperature=0.0)
    expected_long = first.generate(long).text
    expected_short = first.generate(request(1)).text
    result: list[str] = []
    running = threading.Thread(target=lambda: result.append(first.generate(long).text))
    running.start()
    second = BackendType.MISTRALRS.create(device="cpu")
    second.load_model(model_path, max_context=2048)
    assert second.generate(request(1)).text == expected_short
    running.join(timeout=300)
    assert result == [expected_long]
    second.unload()

    outcome: list[str] = []

    def generate_on_old() -> None:
        try:
            outcome.append(first.generate(long).text)
        except ModelClosedError:
            outcome.append("closed")

    running = threading.Thread(target=generate_on_old)
    running.start()
    first.load_model(model_path, max_context=2048)
    running.join(timeout=300)
    assert not running.is_alive()
    assert outcome in (["closed"], [expected_long])
    assert first.generate(request(1)).text == expected_short
    first.unload()


def run_streams(backend: InferenceBackend, expected: list[str]) -> None:
    results: dict[int, str | None] = {}

    def by_thread(i: int) -> None:
        stream = backend.generate_stream(request(i))
        if i % 2:
            next(iter(stream))
            stream.close()
            results[i] = None
        else:
            results[i] = "".join(chunk.text for chunk in stream)

    async def by_task(i: int) -> None:
        stream = backend.agenerate_stream(request(i))
        if i % 2:
            async for _ in stream:
                break
            await stream.aclose()
            results[i] = None
        else:
            results[i] = "".join([chunk.text async for chunk in stream])

    half = STREAMS // 2
    threads = [threading.Thread(target=by_thread, args=(i,)) for i in range(half)]
    for t in threads:
        t.start()

    async def tasks() -> None:
        await asyncio.gather(*(by_task(i) for i in range(half, STREAMS)))

    asyncio.run(tasks())
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a stream hung"
    assert len(results) == STREAMS
    for i, text in results.items():
        if text is not None:
            assert text == expected[i % len(PROMPTS)], i
    # The engine still answers exactly as before.
    assert backend.generate(request(0)).text == expected[0]
