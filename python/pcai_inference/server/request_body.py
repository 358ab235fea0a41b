"""OpenAI request bodies (chat completions, completions) read into our :class:`GenerateRequest`.

Every field is checked here with the field's name in the message (a 400 with ``param``); what
the engine checks again (ranges, token ids, grammars) comes back as our own
:class:`InvalidRequestError`, also a 400. Fields OpenAI clients send that change nothing here
(``user``, ``store``, ``metadata``...) are ignored; ones we cannot honour are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, TypeVar

from ..errors import InvalidRequestError
from ..types import ChatMessage, GenerateRequest
from .errors import ApiError

__all__ = ["MAX_CHOICES", "GenerationJob", "chat_job", "completion_job"]

MAX_CHOICES = 16
"""The most choices (``n``) one request may ask for."""

MAX_LEGACY_LOGPROBS = 5
"""The completions API's ``logprobs`` is a count of alternatives, at most 5 (OpenAI's limit)."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

T = TypeVar("T")


@dataclass(frozen=True)
class GenerationJob:
    """What one HTTP request asks for: the generation, how many choices, how to answer."""

    request: GenerateRequest
    model: Optional[str]
    n: int
    stream: bool
    include_usage: bool
    logprobs: bool
    """Report the chosen tokens' log-probabilities (with ``request.top_logprobs`` alternatives)."""


def _field(body: Mapping[str, Any], name: str, kind: type[T] | tuple[type, ...], check: str) -> Optional[T]:
    """``body[name]`` when present and not null, of ``kind`` (a bool is not a number here)."""
    value = body.get(name)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ApiError(400, f"{name} must be {check}, got {value!r}", param=name)
    if not isinstance(value, kinds):
        raise ApiError(400, f"{name} must be {check}, got {value!r}", param=name)
    return value  # type: ignore[return-value]


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> Optional[float]:
    value = _field(body, name, (int, float), f"a number in [{low:g}, {high:g}]")
    if value is not None and not low <= float(value) <= high:
        raise ApiError(400, f"{name} must be a number in [{low:g}, {high:g}], got {value!r}", param=name)
    return None if value is None else float(value)


def _integer(body: Mapping[str, Any], name: str, low: int, high: Optional[int] = None) -> Optional[int]:
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    value = _field(body, name, int, what)
    if value is not None and (value < low or (high is not None and value > high)):
        raise ApiError(400, f"{name} must be {what}, got {value!r}", param=name)
    return value


def _refuse(body: Mapping[str, Any], name: str, unless: Callable[[Any], bool], why: str) -> None:
    value = body.get(name)
    if value is not None and not unless(value):
        raise ApiError(400, f"{name} is not supported: {why}", param=name)


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise ApiError(400, "stop must be a string or a list of strings", param="stop")


def _logit_bias(body: Mapping[str, Any]) -> Optional[dict[int, float]]:
    bias = _field(body, "logit_bias", dict, "an object mapping token ids to biases")
    if bias is None:
        return None
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ApiError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise ApiError(400, f"logit_bias values must be numbers in [-100, 100], got {value!r}", param="logit_bias")
        out[token] = float(value)
    return out


def _sampling(body: Mapping[str, Any], max_tokens_default: int) -> dict[str, Any]:
    """The sampling fields both APIs share, as :class:`GenerateRequest` keywords."""
    _refuse(body, "tools", lambda v: v == [], "this server does not run tool calls")
    _refuse(body, "functions", lambda v: v == [], "this server does not run function calls")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    params: dict[str, Any] = {
        "max_tokens": max_tokens if max_tokens is not None else max_tokens_default,
        "stop": _stop(body),
        "logit_bias": _logit_bias(body),
    }
    for name, low, high in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
        ("min_p", 0.0, 1.0),
        ("repetition_penalty", 0.0, 10.0),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            params[name] = value
    top_k = _integer(body, "top_k", 0)
    if top_k is not None:
        params["top_k"] = top_k
    seed = _integer(body, "seed", -(1 << 63))
    if seed is not None:
        params["seed"] = seed
    if body.get("response_format") is not None:
        params["response_format"] = _field(body, "response_format", dict, "an object such as {'type': 'json_object'}")
    for name in ("regex", "grammar"):
        text = _field(body, name, str, "a string")
        if text is not None:
            params[name] = text
    return params


def _common(body: Mapping[str, Any]) -> tuple[Optional[str], int, bool, bool]:
    model = _field(body, "model", str, "a string")
    n = _integer(body, "n", 1, MAX_CHOICES) or 1
    stream = bool(_field(body, "stream", bool, "true or false"))
    options = _field(body, "stream_options", dict, "an object")
    include_usage = False
    if options is not None:
        if not stream:
            raise ApiError(400, "stream_options is only allowed with stream: true", param="stream_options")
        include_usage = bool(_field(options, "include_usage", bool, "true or false"))
    return model, n, stream, include_usage


def _build(fields: dict[str, Any]) -> GenerateRequest:
    try:
        return GenerateRequest(**fields)
    except InvalidRequestError as e:
        raise ApiError(400, str(e)) from None


def _messages(body: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of chat messages", param="messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with role and content", param=where)
        role = m.get("role")
        if role not in _ROLES:
            known = sorted(_ROLES)
            raise ApiError(400, f"{where}.role must be one of {known} (no tools here), got {role!r}", param=where)
        if m.get("tool_calls"):
            raise ApiError(400, f"{where}.tool_calls is not supported: this server runs no tools", param=where)
        content = m.get("content")
        if content is None:
            raise ApiError(400, f"{where}.content is required", param=where)
        try:
            out.append(ChatMessage(_ROLES[role], content))
        except InvalidRequestError as e:
            raise ApiError(400, f"{where}: {e}", param=where) from None
    return tuple(out)


def chat_job(body: Mapping[str, Any], max_tokens_default: int) -> GenerationJob:
    """``POST /v1/chat/completions``."""
    model, n, stream, include_usage = _common(body)
    logprobs = bool(_field(body, "logprobs", bool, "true or false"))
    top = _integer(body, "top_logprobs", 0, 20) or 0
    if top and not logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    fields = _sampling(body, max_tokens_default)
    request = _build(dict(messages=_messages(body), logprobs=logprobs, top_logprobs=top, **fields))
    return GenerationJob(request, model, n, stream, include_usage, logprobs)


def completion_job(body: Mapping[str, Any], max_tokens_default: int) -> GenerationJob:
    """``POST /v1/completions`` (a text prompt; ``logprobs`` is the count of alternatives)."""
    model, n, stream, include_usage = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", param="prompt")
    _refuse(body, "echo", lambda v: v is False, "the answer never repeats the prompt")
    _refuse(body, "suffix", lambda v: v == "", "this server does not fill in the middle")
    best_of = _integer(body, "best_of", 1)
    if best_of is not None and best_of != n:
        raise ApiError(400, "best_of is not supported (other than equal to n)", param="best_of")
    top = _integer(body, "logprobs", 0, MAX_LEGACY_LOGPROBS)
    parse_special = bool(_field(body, "parse_special", bool, "true or false"))
    fields = _sampling(body, max_tokens_default)
    request = _build(
        dict(prompt=prompt, logprobs=top is not None, top_logprobs=top or 0, parse_special=parse_special, **fields)
    )
    return GenerationJob(request, model, n, stream, include_usage, top is not None)
