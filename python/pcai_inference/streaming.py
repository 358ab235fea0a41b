"""Sync and async iterators over a running generation.

The native generation is waited on in short slices with the GIL released, so Ctrl-C is
seen between slices, and leaving a loop early (``break``, ``close()``, a cancelled task)
cancels the generation in the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, AsyncIterator, Iterator, Optional

from ._core import NativeGeneration
from .types import FinishReason, GenerateResponse, StreamChunk, Timings

__all__ = ["AsyncTokenStream", "TokenStream", "acollect", "collect"]

# Short enough that Ctrl-C and task cancellation are seen quickly, long enough to cost nothing.
_WAIT_SLICE_S = 0.1

_executor_lock = threading.Lock()
_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _async_executor() -> concurrent.futures.ThreadPoolExecutor:
    """Threads that wait on native generations for asyncio; waits are GIL-free and short."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="pcai-async")
        return _executor


def _timings(figures: dict[str, Any]) -> Timings:
    """Timings from the native figures; rates are per second of the phase they describe."""
    prompt_s = float(figures["prompt_seconds"])
    decode_s = float(figures["decode_seconds"])
    prompt_tokens = int(figures["prompt_tokens"])
    generated = int(figures["tokens_generated"])
    return Timings(
        prompt_seconds=prompt_s,
        decode_seconds=decode_s,
        total_seconds=float(figures["total_seconds"]),
        prompt_tokens_per_second=prompt_tokens / prompt_s if prompt_s > 0 else 0.0,
        # The first token comes out of prompt processing, so decode covers the rest.
        decode_tokens_per_second=(generated - 1) / decode_s if decode_s > 0 and generated > 1 else 0.0,
    )


def _chunk(text: str, figures: Optional[dict[str, Any]]) -> StreamChunk:
    if figures is None:
        return StreamChunk(text=text)
    return StreamChunk(
        text=text,
        finish_reason=FinishReason(figures["finish_reason"]),
        tokens_generated=int(figures["tokens_generated"]),
        prompt_tokens=int(figures["prompt_tokens"]),
        timings=_timings(figures),
        token_ids=tuple(figures["token_ids"]),
        token_logprobs=None if figures["token_logprobs"] is None else tuple(figures["token_logprobs"]),
        top_logprobs=_top_logprobs(figures),
    )


def _top_logprobs(figures: dict[str, Any]) -> Optional[tuple[tuple[tuple[int, float], ...], ...]]:
    top = figures.get("top_logprobs")
    if top is None or not any(top):
        return None
    return tuple(tuple((int(i), float(p)) for i, p in step) for step in top)


class _StreamState:
    """What the sync and async iterators share: turning native events into chunks, and
    cancelling once."""

    def __init__(self, generation: NativeGeneration) -> None:
        self.generation = generation
        self.finished = False
        self.last: Optional[StreamChunk] = None

    def accept(self, event: tuple[str, Optional[dict[str, Any]]]) -> StreamChunk:
        text, figures = event
        chunk = _chunk(text, figures)
        if chunk.is_last:
            self.finished = True
            self.last = chunk
        return chunk

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            figures = self.generation.cancel()
            if figures is not None:
                self.last = _chunk("", figures)


class _StreamBase:
    """A stream's state, and the cancel-on-garbage-collection both stream kinds need."""

    def __init__(self, generation: NativeGeneration) -> None:
        self._state = _StreamState(generation)

    @property
    def _generation(self) -> NativeGeneration:
        return self._state.generation

    @property
    def last(self) -> Optional[StreamChunk]:
        """The final chunk, once the stream has ended."""
        return self._state.last

    def cancel(self) -> None:
        """Stops the generation if it is still running (the engine frees it at its next step)."""
        self._state.cancel()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None:
            state.cancel()


class TokenStream(_StreamBase, Iterator[StreamChunk]):
    """Iterates over the text of a running generation; also a context manager."""

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> StreamChunk:
        if self._state.finished:
            raise StopIteration
        try:
            event = None
            while event is None:
                event = self._state.generation.next(_WAIT_SLICE_S)
        except BaseException:
            self._state.cancel()
            raise
        return self._state.accept(event)

    def close(self) -> None:
        """Stops the generation if it is still running."""
        self._state.cancel()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTokenStream(_StreamBase, AsyncIterator[StreamChunk]):
    """The asyncio twin of :class:`TokenStream`."""

    def __aiter__(self) -> AsyncTokenStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._state.finished:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            event = None
            while event is None:
                event = await loop.run_in_executor(_async_executor(), self._state.generation.next, _WAIT_SLICE_S)
        except BaseException:
            self._state.cancel()
            raise
        return self._state.accept(event)

    async def aclose(self) -> None:
        """Stops the generation if it is still running."""
        self._state.cancel()

    async def __aenter__(self) -> AsyncTokenStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._state.cancel()


def _response(parts: list[str], last: StreamChunk) -> GenerateResponse:
    assert last.finish_reason is not None and last.timings is not None
    return GenerateResponse(
        text="".join(parts),
        tokens_generated=last.tokens_generated or 0,
        prompt_tokens=last.prompt_tokens or 0,
        finish_reason=last.finish_reason,
        timings=last.timings,
        token_ids=last.token_ids or (),
        token_logprobs=last.token_logprobs,
        top_logprobs=last.top_logprobs,
    )


def collect(stream: TokenStream) -> GenerateResponse:
    """Runs a stream to its end and returns the whole response."""
    parts: list[str] = []
    with stream:
        for chunk in stream:
            parts.append(chunk.text)
            if chunk.is_last:
                return _response(parts, chunk)
    raise AssertionError("a stream always ends with a final chunk")  # pragma: no cover


async def acollect(stream: AsyncTokenStream) -> GenerateResponse:
    """Runs an async stream to its end and returns the whole response."""
    parts: list[str] = []
    async with stream:
        async for chunk in stream:
            parts.append(chunk.text)
            if chunk.is_last:
                return _response(parts, chunk)
    raise AssertionError("a stream always ends with a final chunk")  # pragma: no cover
