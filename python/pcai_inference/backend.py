"""The backend interface and the enum that creates backends."""

from __future__ import annotations

import abc
import enum
import os
from typing import Any, Optional, Sequence, Union

from .streaming import AsyncTokenStream, TokenStream, acollect, collect
from .types import GenerateRequest, GenerateResponse, MessageLike

__all__ = ["BackendType", "InferenceBackend", "RequestLike"]

RequestLike = Union[GenerateRequest, str]
"""A :class:`GenerateRequest`, or a prompt string (sampling settings then come as keywords)."""


class InferenceBackend(abc.ABC):
    """What every backend offers: load a model, generate (blocking, streaming, async), unload.

    A backend is safe to share between threads and asyncio tasks; requests run concurrently
    in the engine. Use it as a context manager to unload the model at the end.
    """

    @abc.abstractmethod
    def load_model(
        self,
        model: Union[str, os.PathLike[str]],
        *,
        filename: Optional[str] = None,
        revision: Optional[str] = None,
        tokenizer: Optional[Union[str, os.PathLike[str]]] = None,
        chat_template: Optional[str] = None,
        max_context: Optional[int] = None,
        max_batch: Optional[int] = None,
    ) -> None:
        """Loads a model (a local path or a hub repository id), replacing any loaded one."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Frees the model. Generating afterwards raises :class:`ModelNotLoadedError`."""

    @property
    @abc.abstractmethod
    def is_loaded(self) -> bool: ...

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """The device in use (``"cpu"``, ``"cuda:0"``, ``"metal:0"``)."""

    @abc.abstractmethod
    def generate_stream(self, request: RequestLike, **params: Any) -> TokenStream:
        """Starts a generation and iterates over its text."""

    @abc.abstractmethod
    def agenerate_stream(self, request: RequestLike, **params: Any) -> AsyncTokenStream:
        """Starts a generation and iterates over its text asynchronously."""

    @abc.abstractmethod
    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]: ...

    @abc.abstractmethod
    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def generate(self, request: RequestLike, **params: Any) -> GenerateResponse:
        """Generates to the end and returns the whole response.

        ``backend.generate("Once upon a time", max_tokens=16)`` is the keyword shortcut.
        """
        return collect(self.generate_stream(request, **params))

    async def agenerate(self, request: RequestLike, **params: Any) -> GenerateResponse:
        """The asyncio twin of :meth:`generate`."""
        return await acollect(self.agenerate_stream(request, **params))

    def chat(self, messages: Sequence[MessageLike], **params: Any) -> GenerateResponse:
        """Answers chat messages using the model's chat template."""
        return self.generate(GenerateRequest(messages=tuple(messages), **params))

    async def achat(self, messages: Sequence[MessageLike], **params: Any) -> GenerateResponse:
        """The asyncio twin of :meth:`chat`."""
        return await self.agenerate(GenerateRequest(messages=tuple(messages), **params))

    def chat_stream(self, messages: Sequence[MessageLike], **params: Any) -> TokenStream:
        """Streams the answer to chat messages."""
        return self.generate_stream(GenerateRequest(messages=tuple(messages), **params))

    def close(self) -> None:
        """Same as :meth:`unload`."""
        self.unload()

    def __enter__(self) -> InferenceBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unload()


class BackendType(str, enum.Enum):
    """The available backends. ``BackendType.MISTRALRS.create()`` makes one."""

    MISTRALRS = "mistralrs"

    def create(self, device: str = "auto") -> InferenceBackend:
        """Creates a backend for ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"metal"``. A device this build or machine cannot use raises :class:`DeviceError`."""
        from .mistralrs_backend import MistralRsBackend

        return MistralRsBackend(device=device)
