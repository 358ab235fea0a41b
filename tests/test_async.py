"""The asyncio twins give the same results, and cancelling a task stops the engine work."""

from __future__ import annotations

import asyncio
import contextlib

from pcai_inference import FinishReason, GenerateRequest, InferenceBackend

from conftest import PROMPTS


def greedy(prompt: str, n: int = 24) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, max_tokens=n, temperature=0.0)


def test_agenerate_equals_generate(backend: InferenceBackend) -> None:
    sync = backend.generate(greedy(PROMPTS[0]))
    result = asyncio.run(backend.agenerate(greedy(PROMPTS[0])))
    assert result.text == sync.text
    assert result.tokens_generated == sync.tokens_generated
    assert result.finish_reason is sync.finish_reason


def test_async_stream_equals_sync_stream(backend: InferenceBackend) -> None:
    sync_chunks = [c.text for c in backend.generate_stream(greedy(PROMPTS[1]))]

    async def run() -> list[str]:
        return [c.text async for c in backend.agenerate_stream(greedy(PROMPTS[1]))]

    assert asyncio.run(run()) == sync_chunks


def test_many_tasks_at_once_match_solo_runs(backend: InferenceBackend) -> None:
    solo = [backend.generate(greedy(p)).text for p in PROMPTS]

    async def run() -> list[str]:
        results = await asyncio.gather(*(backend.agenerate(greedy(p)) for p in PROMPTS))
        return [r.text for r in results]

    assert asyncio.run(run()) == solo


def test_cancelled_task_stops_generation(backend: InferenceBackend) -> None:
    async def run() -> int | None:
        stream = backend.agenerate_stream("Once upon a time", max_tokens=2000, temperature=0.0)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in stream:
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert stream.last is not None and stream.last.finish_reason is FinishReason.CANCELLED
        return stream._generation.wait_engine_release(60.0)  # type: ignore[attr-defined]

    released = asyncio.run(run())
    assert released is not None and released < 20


def test_achat_equals_chat(backend: InferenceBackend) -> None:
    messages = [{"role": "user", "content": "Hi"}]

    async def run() -> str:
        return (await backend.achat(messages, max_tokens=8, temperature=0.0)).text

    assert asyncio.run(run()) == backend.chat(messages, max_tokens=8, temperature=0.0).text
