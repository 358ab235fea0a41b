"""The mistral.rs backend: a thin Python face over the native ``_core`` module."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from . import _core
from .backend import InferenceBackend, RequestLike
from .errors import InvalidRequestError, ModelNotFoundError, ModelNotLoadedError
from .hub_settings import ProgressCallback
from .media import audio_bytes, image_bytes
from .model_source import ModelFormat, locate_model, locate_tokenizer
from .streaming import AsyncTokenStream, TokenStream
from .tokenizer import Tokenizer
from .types import ChatMessage, ContentPart, GenerateRequest, ImagePart, MessageLike, TextPart

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MistralRsBackend"]

DEFAULT_MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""64 megapixels (an 8K photo is 33)."""

_REQUEST_FIELDS = {f.name for f in dataclasses.fields(GenerateRequest)}


def _as_request(request: RequestLike, params: dict[str, Any]) -> GenerateRequest:
    unknown = set(params) - _REQUEST_FIELDS
    if unknown:
        raise InvalidRequestError(
            f"unknown generation parameter(s) {sorted(unknown)}; known: {sorted(_REQUEST_FIELDS)}"
        )
    if isinstance(request, GenerateRequest):
        return dataclasses.replace(request, **params) if params else request
    if isinstance(request, str):
        return GenerateRequest(prompt=request, **params)
    raise InvalidRequestError(f"request must be a GenerateRequest or a prompt string, got {type(request).__name__}")


def _sampling(req: GenerateRequest) -> dict[str, Any]:
    """The request's generation settings, as the native ``start`` takes them."""
    return dict(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        stop=list(req.stop),
        seed=req.seed,
        repetition_penalty=req.repetition_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=list(req.logit_bias.items()) if req.logit_bias else [],
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
        json_schema=None if req.json_schema is None else json.dumps(req.json_schema),
        regex=req.regex,
        grammar=req.grammar,
    )


FALLBACK_TEMPLATE_STOP = "\nUser:"
"""With the fallback chat template (a plain ``User:`` / ``Assistant:`` transcript), a chat answer
ends where the model starts the user's next line."""


def _template_text(chat_template: str) -> str:
    """A chat template given as a path is read; anything else is the template itself."""
    looks_like_path = "\n" not in chat_template and "{" not in chat_template and len(chat_template) < 4096
    if not looks_like_path:
        return chat_template
    path = Path(chat_template).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"chat template file {path} does not exist")
    return path.read_text(encoding="utf-8")


class MistralRsBackend(InferenceBackend):
    """Runs models with the mistral.rs engine, in this process."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    """Images larger than this (width x height) are refused with :class:`InvalidImageError`
    before they are decoded. Set it on the backend to allow larger ones."""

    def __init__(self, device: str = "auto") -> None:
        if not isinstance(device, str):
            raise InvalidRequestError(f"device must be a string such as 'auto' or 'cuda:0', got {device!r}")
        self._device_spec = device
        # Fails now, with DeviceError, if this build or machine cannot use the device.
        self._resolved_device = _core.resolve_device_name(device)
        self._model: Optional[_core.NativeModel] = None

    # -- loading --------------------------------------------------------------------------

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
        dtype: str = "auto",
        isq: Optional[str] = None,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Loads a model, replacing any loaded one. ``model`` is one of:

        - a ``.gguf`` file, or a folder holding one (``filename=`` picks among several);
        - a Hugging Face SafeTensors folder (``config.json``, ``*.safetensors``, ``tokenizer.json``);
        - a Hugging Face hub repository id (``"google/gemma-3-270m"``): a SafeTensors model,
          or a GGUF repository (``filename=`` picks the file when it holds several). ``revision``
          is a branch, tag or commit (default ``main``). Files land in the standard Hugging Face
          cache; ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_TOKEN`` and
          ``HF_HUB_OFFLINE`` are honoured. ``on_progress(done, total)`` follows the download in
          bytes; a bar is shown when stderr is a terminal.

        ``tokenizer`` replaces the model's tokenizer: a ``tokenizer.json``, a folder holding one,
        or a hub repository id.

        ``chat_template`` is a Jinja template (the string itself, or a path to a file) used by
        :meth:`chat`; without it the template that comes with the model is used, if any.

        ``max_context`` caps the tokens of one request (prompt and generated together), like
        llama.cpp's ``n_ctx``; a smaller window loads faster. Default: the model's own window.

        ``max_batch`` is the most requests the engine runs together in one step (default 8;
        1 runs concurrent requests one at a time); further concurrent requests wait their turn.
        With quantized weights each request gets exactly what it gets alone, whatever else runs
        beside it (unquantized weights: log-probabilities equal to float rounding). Models that
        take audio run one request at a time.

        For SafeTensors models only: ``dtype`` (``auto``, ``f32``, ``f16``, ``bf16``) and
        ``isq``, in-situ quantization at load (e.g. ``"Q4K"``, ``"Q8_0"``).
        """
        if not isinstance(model, (str, os.PathLike)):
            raise InvalidRequestError(f"model must be a path or a hub repository id, got {type(model).__name__}")
        for name, value in (("filename", filename), ("revision", revision)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}")
        if max_context is not None and (
            isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1
        ):
            raise InvalidRequestError(f"max_context must be a positive number of tokens, got {max_context!r}")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise InvalidRequestError(f"max_batch must be a positive number of requests, got {max_batch!r}")
        if not isinstance(dtype, str) or dtype.lower() not in {"auto", "f32", "f16", "bf16"}:
            raise InvalidRequestError(f"dtype must be 'auto', 'f32', 'f16' or 'bf16', got {dtype!r}")
        if isq is not None and not isinstance(isq, str):
            raise InvalidRequestError(f"isq must be a quantization name such as 'Q4K', got {isq!r}")
        if on_progress is not None and not callable(on_progress):
            raise InvalidRequestError("on_progress must be a callable taking (done, total)")
        template = _template_text(chat_template) if chat_template is not None else None
        tokenizer_path = str(locate_tokenizer(tokenizer)) if tokenizer is not None else None
        located = locate_model(model, filename=filename, revision=revision, on_progress=on_progress)
        if located.format is ModelFormat.SAFETENSORS:
            native = _core.NativeModel.load_folder(
                str(located.path),
                self._device_spec,
                template,
                max_context,
                tokenizer_path,
                dtype.lower(),
                isq,
                max_batch,
            )
        else:
            if dtype.lower() != "auto" or isq is not None:
                raise InvalidRequestError("dtype and isq apply to SafeTensors models; a GGUF file is already quantized")
            native = _core.NativeModel.load_gguf(
                str(located.path), self._device_spec, template, max_context, tokenizer_path, max_batch
            )
        self.unload()
        self._model = native

    def load_gguf_hf(self, repo: str, filename: str, **options: Any) -> None:
        """Loads ``filename`` from the GGUF repository ``repo`` on the Hugging Face hub; the
        other keywords are those of :meth:`load_model`."""
        self.load_model(repo, filename=filename, **options)

    def unload(self) -> None:
        model, self._model = self._model, None
        if model is not None:
            model.unload()

    @property
    def is_loaded(self) -> bool:
        return self._model is not None and self._model.is_loaded

    @property
    def device(self) -> str:
        return self._model.device if self._model is not None and self._model.is_loaded else self._resolved_device

    @property
    def context_window(self) -> int:
        """The model's context window, in tokens."""
        return self._native().context_window

    @property
    def max_batch(self) -> int:
        """The most requests the engine runs together in one step."""
        return self._native().max_batch

    @property
    def model_path(self) -> Path:
        return Path(self._native().model_path)

    @property
    def chat_template_origin(self) -> str:
        """Where :meth:`chat`'s template comes from: ``"given"`` (``chat_template=``), ``"model"``
        (the model's own) or ``"fallback"`` (a plain ``User:`` / ``Assistant:`` transcript for
        models that have none, such as base models; a chat answer then also stops at
        ``"\\nUser:"``)."""
        return self._native().chat_template_origin

    @property
    def chat_template(self) -> str:
        """The chat template's source text."""
        return self._native().chat_template

    def _native(self) -> _core.NativeModel:
        if self._model is None:
            raise ModelNotLoadedError("no model is loaded; call load_model() first")
        return self._model

    # -- tokens ---------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The loaded model's tokenizer."""
        return Tokenizer(self._native().tokenizer)

    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the model's BOS comes first. Control
        tokens' texts in ``text`` are text unless ``parse_special`` (llama.cpp's meaning)."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.tokenize(text, add_special_tokens, parse_special)

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.detokenize(ids, skip_special_tokens)

    def chat_prompt_ids(self, messages: Sequence[MessageLike]) -> list[int]:
        """The prompt token ids :meth:`chat` would give the model for ``messages`` (the chat
        template rendered; message text read as text, the template's markup as control tokens)."""
        chat = tuple(ChatMessage.from_any(m) for m in messages)
        if not chat:
            raise InvalidRequestError("messages must not be empty")
        return self._native().chat_prompt(json.dumps([m.to_engine() for m in chat]))

    # -- generation -----------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        """What the loaded model reads: ``{"text"}``, plus ``"image"`` and ``"audio"`` for models
        that take them."""
        return frozenset(self._native().input_modalities)

    def _start(self, request: RequestLike, params: dict[str, Any]) -> _core.NativeGeneration:
        req = _as_request(request, params)
        native = self._native()
        messages = req.chat_messages
        if req.images:
            assert req.prompt is not None
            parts: tuple[ContentPart, ...] = (*(ImagePart(i) for i in req.images), TextPart(req.prompt))
            messages = (ChatMessage("user", parts),)
        images = [image for m in messages for image in m.images]
        audios = [audio for m in messages for audio in m.audios]
        if images or audios:
            for given, kind, plural in ((images, "image", "images"), (audios, "audio", "audio")):
                if given and kind not in native.input_modalities:
                    raise InvalidRequestError(
                        f"this model reads {' and '.join(native.input_modalities)} only; it cannot take {plural}"
                    )
            return native.start(
                [],
                messages_json=json.dumps([m.to_engine() for m in messages]),
                images=[image_bytes(im, f"image {i + 1}").as_tuple() for i, im in enumerate(images)],
                audios=[audio_bytes(a.audio, a.sample_rate, f"audio {i + 1}").as_tuple() for i, a in enumerate(audios)],
                max_image_pixels=self.max_image_pixels,
                **_sampling(req),
            )
        sampling = _sampling(req)
        if req.messages is not None:
            prompt_ids = native.chat_prompt(json.dumps([m.to_engine() for m in req.chat_messages]))
            if native.chat_template_origin == "fallback" and FALLBACK_TEMPLATE_STOP not in req.stop:
                sampling["stop"] = [*req.stop, FALLBACK_TEMPLATE_STOP]
        else:
            assert req.prompt is not None
            if not req.prompt:
                raise InvalidRequestError("the prompt is empty: give at least one character of text")
            prompt_ids = native.tokenizer.tokenize(req.prompt, True, req.parse_special)
        return native.start(prompt_ids, **sampling)

    def generate_stream(self, request: RequestLike, **params: Any) -> TokenStream:
        return TokenStream(self._start(request, params))

    def agenerate_stream(self, request: RequestLike, **params: Any) -> AsyncTokenStream:
        return AsyncTokenStream(self._start(request, params))

    def __repr__(self) -> str:
        state = f"model={str(self.model_path)!r}" if self.is_loaded else "no model"
        return f"MistralRsBackend(device={self.device!r}, {state})"
