"""The JSON objects of OpenAI's API that our answers are made of."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Optional, Sequence

from ..types import FinishReason, GenerateResponse, StreamChunk

__all__ = [
    "TokenText",
    "chat_completion",
    "chat_logprobs",
    "chunk",
    "completion",
    "completion_logprobs",
    "finish_reason",
    "new_id",
    "usage",
]

TokenText = Callable[[int], str]
"""A token id's text (for log-probabilities)."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(reason: Optional[FinishReason]) -> Optional[str]:
    """OpenAI's words: a stop string ends with ``stop``, as the end-of-turn token does."""
    if reason is None:
        return None
    return "length" if reason is FinishReason.LENGTH else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _entry(text: TokenText, token: int, logprob: float) -> dict[str, Any]:
    piece = text(token)
    return {"token": piece, "logprob": logprob, "bytes": list(piece.encode("utf-8"))}


def chat_logprobs(r: GenerateResponse | StreamChunk, text: TokenText) -> Optional[dict[str, Any]]:
    """``choices[i].logprobs`` of the chat API."""
    if r.token_logprobs is None or r.token_ids is None:
        return None
    tops = r.top_logprobs or tuple(() for _ in r.token_ids)
    content = []
    for token, logprob, top in zip(r.token_ids, r.token_logprobs, tops, strict=False):
        entry = _entry(text, token, logprob)
        entry["top_logprobs"] = [_entry(text, t, p) for t, p in top]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(r: GenerateResponse | StreamChunk, text: TokenText) -> Optional[dict[str, Any]]:
    """``choices[i].logprobs`` of the completions API (parallel lists)."""
    if r.token_logprobs is None or r.token_ids is None:
        return None
    tokens = [text(t) for t in r.token_ids]
    offsets, at = [], 0
    for piece in tokens:
        offsets.append(at)
        at += len(piece)
    tops = r.top_logprobs or tuple(() for _ in r.token_ids)
    return {
        "tokens": tokens,
        "token_logprobs": list(r.token_logprobs),
        "top_logprobs": [{text(t): p for t, p in top} for top in tops],
        "text_offset": offsets,
    }


def chat_completion(
    model: str, results: Sequence[GenerateResponse], logprobs: Optional[TokenText], created: int, ident: str
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text, "refusal": None},
                "logprobs": chat_logprobs(r, logprobs) if logprobs else None,
                "finish_reason": finish_reason(r.finish_reason),
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(results[0].prompt_tokens, sum(r.tokens_generated for r in results)),
    }


def completion(
    model: str, results: Sequence[GenerateResponse], logprobs: Optional[TokenText], created: int, ident: str
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "text": r.text,
                "logprobs": completion_logprobs(r, logprobs) if logprobs else None,
                "finish_reason": finish_reason(r.finish_reason),
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(results[0].prompt_tokens, sum(r.tokens_generated for r in results)),
    }


def chunk(
    kind: str,
    model: str,
    created: int,
    ident: str,
    choices: list[dict[str, Any]],
    with_usage_field: bool,
    usage_value: Optional[dict[str, int]] = None,
) -> dict[str, Any]:
    """A streamed chunk: ``kind`` is ``chat.completion.chunk`` or ``text_completion``. With
    ``stream_options.include_usage`` every chunk has ``usage`` (null but in the last one)."""
    out: dict[str, Any] = {"id": ident, "object": kind, "created": created, "model": model, "choices": choices}
    if with_usage_field:
        out["usage"] = usage_value
    return out
