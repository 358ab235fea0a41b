"""Faults under load: many streams at once, with half of them abandoned.

    PCAI_SOAK_STREAMS=256 pytest tests/test_soak.py    # a longer run (CI: 64)

(Repeated load/unload cycles leak memory today: RSS grew 230-340 MiB over 6 cycles in two runs;
that test comes with the fix. See issue 7.)
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from pcai_inference import GenerateRequest, InferenceBackend

from conftest import PROMPTS

STREAMS = int(os.environ.get("PCAI_SOAK_STREAMS", "64"))
TOKENS = 8

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def request(i: int) -> GenerateRequest:
    return GenerateRequest(prompt=PROMPTS[i % len(PROMPTS)], max_tokens=TOKENS, temperature=0.0)


def test_many_streams_half_abandoned_give_the_sequential_text(backend: InferenceBackend) -> None:
    """Half the streams (threads and asyncio tasks alike) are left after their first piece;
    the others give exactly the sequential text, twice over, and nothing hangs.

    Memory is printed, not asserted: measured +883 MiB after the first round of 64 and +192 MiB
    after the second (issue 7 asks for memory back near baseline; not met yet, open)."""
    expected = [backend.generate(request(i)).text for i in range(len(PROMPTS))]
    before = rss_mib()
    run_streams(backend, expected)
    after_first = rss_mib()
    run_streams(backend, expected)
    print(
        f"{STREAMS} streams: RSS {before:.0f} MiB, after round 1 {after_first - before:+.0f}, "
        f"after round 2 {rss_mib() - after_first:+.0f}"
    )


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
