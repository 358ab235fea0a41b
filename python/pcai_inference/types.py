"""Requests, responses and their parts."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from .errors import InvalidRequestError, check_text
from .media import AudioInput, ImageInput

__all__ = [
    "AudioPart",
    "ChatMessage",
    "ContentPart",
    "FinishReason",
    "GenerateRequest",
    "GenerateResponse",
    "ImagePart",
    "MessageLike",
    "StreamChunk",
    "TextPart",
    "Timings",
]


class FinishReason(str, enum.Enum):
    """Why a generation ended."""

    STOP = "stop"
    """The model produced its end-of-generation token."""
    LENGTH = "length"
    """``max_tokens`` was reached (or the context window filled up)."""
    STOP_SEQUENCE = "stop_sequence"
    """A stop string appeared; the text ends just before it."""
    CANCELLED = "cancelled"
    """The caller stopped the generation (closed the stream, cancelled the task, Ctrl-C)."""


@dataclass(frozen=True)
class TextPart:
    """A piece of text inside a chat message."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidRequestError(f"a text part's text must be a str, got {type(self.text).__name__}")
        check_text(self.text, "a text part")

    def to_engine(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True)
class ImagePart:
    """An image inside a chat message: a path, bytes, a ``data:`` or ``http(s)`` URL, a PIL
    image or a numpy ``H x W x 3`` uint8 array. The model's chat template places it."""

    image: ImageInput

    def to_engine(self) -> dict[str, Any]:
        return {"type": "image"}


@dataclass(frozen=True)
class AudioPart:
    """A sound inside a chat message: a path, encoded bytes (WAV, FLAC, MP3, Ogg), a ``data:``
    or ``http(s)`` URL, or float samples (a numpy array) with their ``sample_rate``."""

    audio: AudioInput
    sample_rate: Optional[int] = None

    def to_engine(self) -> dict[str, Any]:
        return {"type": "audio"}


ContentPart = Union[TextPart, ImagePart, AudioPart]


def _part_from(value: object) -> ContentPart:
    if isinstance(value, (TextPart, ImagePart, AudioPart)):
        return value
    if isinstance(value, str):
        return TextPart(value)
    if isinstance(value, Mapping):
        kind = value.get("type", "text")
        if kind == "text" and isinstance(value.get("text"), str):
            return TextPart(value["text"])
        if kind == "image" and value.get("image") is not None:
            return ImagePart(value["image"])
        if kind == "image_url":  # the OpenAI spelling: {"image_url": {"url": ...}} or {"image_url": "..."}
            url = value.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str):
                return ImagePart(url)
        if kind == "audio" and value.get("audio") is not None:
            return AudioPart(value["audio"], value.get("sample_rate"))
        if kind == "input_audio" and isinstance(value.get("input_audio"), Mapping):  # OpenAI: base64 data
            data, fmt = value["input_audio"].get("data"), value["input_audio"].get("format", "wav")
            if isinstance(data, str):
                return AudioPart(f"data:audio/{fmt};base64,{data}")
        if kind == "audio_url":
            url = value.get("audio_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str):
                return AudioPart(url)
        raise InvalidRequestError(
            f"unsupported content part {dict(value)!r}: give text parts "
            '({"type": "text", "text": ...}) or image parts ({"type": "image", "image": ...} '
            'or {"type": "image_url", "image_url": {"url": ...}}) or audio parts '
            '({"type": "audio", "audio": ..., "sample_rate": ...}, "input_audio" or "audio_url")'
        )
    raise InvalidRequestError(
        f"a content part must be a TextPart, ImagePart, AudioPart, a str or a dict, got {type(value).__name__}"
    )


MessageLike = Union["ChatMessage", Mapping[str, Any]]
"""A :class:`ChatMessage` or a dict with ``role`` and ``content``."""


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn. ``content`` is a string or a list of parts."""

    role: str
    content: Union[str, Tuple[ContentPart, ...]]

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise InvalidRequestError("a chat message needs a non-empty string role, e.g. 'user'")
        check_text(self.role, "a message role")
        if isinstance(self.content, str):
            check_text(self.content, "a message's content")
            return
        if not isinstance(self.content, Sequence):
            raise InvalidRequestError(
                f"message content must be a string or a list of parts, got {type(self.content).__name__}"
            )
        object.__setattr__(self, "content", tuple(_part_from(p) for p in self.content))

    @classmethod
    def from_any(cls, value: MessageLike) -> ChatMessage:
        if isinstance(value, ChatMessage):
            return value
        if isinstance(value, Mapping):
            if "role" not in value or "content" not in value:
                raise InvalidRequestError(f"a chat message needs 'role' and 'content' keys, got {sorted(value)}")
            return cls(role=value["role"], content=value["content"])
        raise InvalidRequestError(f"a chat message must be a ChatMessage or a dict, got {type(value).__name__}")

    def to_engine(self) -> dict[str, Any]:
        if isinstance(self.content, str):
            return {"role": self.role, "content": self.content}
        if all(isinstance(p, TextPart) for p in self.content):
            # Text parts only: one string (their texts on separate lines), which every chat
            # template takes; many cannot iterate over parts.
            return {"role": self.role, "content": "\n".join(p.text for p in self.content if isinstance(p, TextPart))}
        return {"role": self.role, "content": [p.to_engine() for p in self.content]}

    @property
    def images(self) -> Tuple[ImageInput, ...]:
        """The images of this message's parts, in order."""
        if isinstance(self.content, str):
            return ()
        return tuple(p.image for p in self.content if isinstance(p, ImagePart))

    @property
    def audios(self) -> Tuple[AudioPart, ...]:
        """The audio parts of this message, in order."""
        if isinstance(self.content, str):
            return ()
        return tuple(p for p in self.content if isinstance(p, AudioPart))


MAX_TOP_LOGPROBS = 20
"""The most alternatives reported per token (OpenAI's limit)."""

_OPENAI_FORMATS = ("text", "json_object", "json_schema")


def _json_schema(value: object) -> Optional[dict[str, Any]]:
    """``{"schema": <the JSON schema>}`` for what a ``response_format`` asks for (``None``: no
    constraint)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"response_format must be a dict (a JSON schema or OpenAI's form), got {value!r}")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        inner = value.get("json_schema")
        if not isinstance(inner, Mapping) or "schema" not in inner:
            raise InvalidRequestError(
                'response_format of type "json_schema" needs {"json_schema": {"name": ..., "schema": {...}}}'
            )
        schema = inner["schema"]
    elif isinstance(kind, str) and kind.startswith("json") and kind not in _OPENAI_FORMATS:
        raise InvalidRequestError(f"response_format type must be one of {list(_OPENAI_FORMATS)}, got {kind!r}")
    else:
        schema = value
    if not isinstance(schema, (Mapping, bool)):
        raise InvalidRequestError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"the JSON schema cannot be written as JSON: {e}") from None
    return {"schema": schema}


@dataclass(frozen=True)
class GenerateRequest:
    """A generation request: a raw ``prompt`` *or* chat ``messages``, and sampling settings.

    ``temperature=0`` is greedy decoding. ``top_k=0``, ``top_p=1`` and ``min_p=0`` switch
    those filters off. ``seed`` makes sampled output reproducible. Penalties follow the
    OpenAI / llama.cpp meanings (``repetition_penalty=1`` and the others ``0`` are off).
    Ranges are checked when the request runs; a bad value raises
    :class:`InvalidRequestError` naming the field.
    """

    prompt: Optional[str] = None
    messages: Optional[Sequence[MessageLike]] = None
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    stop: Tuple[str, ...] = ()
    seed: Optional[int] = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[Mapping[int, float]] = None
    """Added to the logits of these token ids before sampling (``-inf`` bans a token)."""
    logprobs: bool = False
    """Report each generated token's log-probability (``GenerateResponse.token_logprobs``)."""
    top_logprobs: int = 0
    """Also report the this many (0-20) most likely tokens at each step, with their
    log-probabilities (``GenerateResponse.top_logprobs``)."""
    response_format: Optional[Mapping[str, Any]] = None
    """Structured output: the answer is JSON that validates against a JSON schema. Give the
    schema itself (``{"type": "object", "properties": ...}``) or OpenAI's forms:
    ``{"type": "json_schema", "json_schema": {"schema": ...}}``, ``{"type": "json_object"}`` (any
    JSON object) or ``{"type": "text"}`` (no constraint). Enforced token by token while decoding;
    an answer that ends with ``finish_reason`` ``STOP`` parses and validates. One cut short by
    ``max_tokens`` (``LENGTH``) is the beginning of such an answer, not a whole one: give the
    answer room."""
    regex: Optional[str] = None
    """Structured output: the answer matches this regular expression (whole)."""
    grammar: Optional[str] = None
    """Structured output: the answer follows this Lark grammar (llguidance's dialect, top rule
    ``start``)."""
    parse_special: bool = False
    """Read control-token texts in the prompt (``<start_of_turn>``, ``<|im_start|>``) as those
    control tokens. Off by default: text is text (as llama.cpp's ``parse_special=false``), so
    pasted text cannot forge chat turns."""
    images: Tuple[ImageInput, ...] = ()
    """Images for a ``prompt`` request: it becomes one user chat message holding the images and
    then the prompt text (vision models only; chat ``messages`` carry images as parts)."""

    @property
    def json_schema(self) -> Optional[Union[Mapping[str, Any], bool]]:
        """The JSON schema ``response_format`` asks for (``None``: none)."""
        wrapped = _json_schema(self.response_format)
        return None if wrapped is None else wrapped["schema"]

    @property
    def chat_messages(self) -> Tuple[ChatMessage, ...]:
        """The messages as :class:`ChatMessage` objects (empty for a prompt request)."""
        return tuple(ChatMessage.from_any(m) for m in self.messages or ())

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequestError("give exactly one of prompt= or messages=")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidRequestError(f"prompt must be a str, got {type(self.prompt).__name__}")
        if self.prompt is not None:
            check_text(self.prompt, "the prompt")
        images: Any = self.images
        if images is None or isinstance(images, (str, bytes, bytearray)) or not isinstance(images, Sequence):
            images = () if images is None else (images,)
        object.__setattr__(self, "images", tuple(images))
        if self.images and self.messages is not None:
            raise InvalidRequestError("images= goes with prompt=; in chat messages give images as content parts")
        if self.messages is not None:
            if isinstance(self.messages, (str, bytes)) or not isinstance(self.messages, Sequence):
                raise InvalidRequestError("messages must be a list of chat messages")
            msgs = tuple(ChatMessage.from_any(m) for m in self.messages)
            if not msgs:
                raise InvalidRequestError("messages must not be empty")
            object.__setattr__(self, "messages", msgs)
        stop: Any = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if stop is None:
            stop = ()
        if not all(isinstance(s, str) for s in stop):
            raise InvalidRequestError("stop must be a string or a list of strings")
        for s in stop:
            check_text(s, "a stop string")
        object.__setattr__(self, "stop", tuple(stop))
        for name in ("max_tokens", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequestError(f"{name} must be an int, got {value!r}")
            if value < 0:
                raise InvalidRequestError(f"{name} must be >= 0, got {value}")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise InvalidRequestError(f"seed must be an int or None, got {self.seed!r}")
            object.__setattr__(self, "seed", self.seed % (1 << 64))
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequestError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("logprobs", "parse_special"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequestError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.top_logprobs, bool) or not isinstance(self.top_logprobs, int):
            raise InvalidRequestError(f"top_logprobs must be an int, got {self.top_logprobs!r}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}")
        _json_schema(self.response_format)  # checked now; the schema is `json_schema`
        given = [n for n in ("json_schema", "regex", "grammar") if getattr(self, n) is not None]
        if len(given) > 1:
            raise InvalidRequestError(f"give at most one of response_format, regex and grammar, got {given}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, Mapping):
                raise InvalidRequestError("logit_bias must be a dict of token id -> bias")
            bias: dict[int, float] = {}
            for k, v in self.logit_bias.items():
                if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                    raise InvalidRequestError(f"logit_bias keys must be token ids (ints >= 0), got {k!r}")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidRequestError(f"logit_bias values must be numbers, got {v!r}")
                bias[k] = float(v)
            object.__setattr__(self, "logit_bias", bias)


@dataclass(frozen=True)
class Timings:
    """Where the time of one generation went, in seconds."""

    prompt_seconds: float
    """From submission to the first token: queueing and prompt processing."""
    decode_seconds: float
    """From the first token to the end."""
    total_seconds: float
    prompt_tokens_per_second: float
    decode_tokens_per_second: float


@dataclass(frozen=True)
class GenerateResponse:
    """The result of a finished generation."""

    text: str
    tokens_generated: int
    prompt_tokens: int
    finish_reason: FinishReason
    timings: Timings
    token_ids: Tuple[int, ...] = ()
    """The generated token ids (a stop string may end ``text`` inside the last one)."""
    token_logprobs: Optional[Tuple[float, ...]] = None
    """With ``logprobs=True``: each generated token's log-probability under the model (after
    ``logit_bias`` and a structured-output grammar's mask, before temperature and the
    top-k/top-p/min-p filters)."""
    top_logprobs: Optional[Tuple[Tuple[Tuple[int, float], ...], ...]] = None
    """With ``top_logprobs=N``: at each step, the N most likely ``(token id, log-probability)``
    pairs, most likely first."""


@dataclass(frozen=True)
class StreamChunk:
    """A piece of streamed text. The last chunk of a stream carries ``finish_reason``,
    ``tokens_generated``, ``prompt_tokens`` and ``timings``; earlier chunks have them ``None``."""

    text: str
    finish_reason: Optional[FinishReason] = None
    tokens_generated: Optional[int] = None
    prompt_tokens: Optional[int] = None
    timings: Optional[Timings] = field(default=None)
    token_ids: Optional[Tuple[int, ...]] = None
    token_logprobs: Optional[Tuple[float, ...]] = None
    top_logprobs: Optional[Tuple[Tuple[Tuple[int, float], ...], ...]] = None

    @property
    def is_last(self) -> bool:
        return self.finish_reason is not None
