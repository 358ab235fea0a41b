"""The one model a server runs: loading it, admitting requests, starting their generations.

Concurrent requests are not serialized here: each becomes engine generations that the engine
batches (up to ``max_batch`` per step). Admission only bounds how many may wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import Optional

from ..backend import BackendType
from ..default_model import default_model_path
from ..errors import PcaiError
from ..mistralrs_backend import MistralRsBackend
from ..streaming import AsyncTokenStream
from ..types import GenerateRequest
from .errors import ApiError, from_pcai_error
from .settings import ServerSettings

__all__ = ["ModelService"]


class Admission:
    """Places a request holds; released once (also when dropped unreleased)."""

    def __init__(self, service: ModelService, n: int) -> None:
        self._service: Optional[ModelService] = service
        self._n = n

    def release(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service._release(self._n)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class ModelService:
    """Holds the backend and the count of requests in flight."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._backend: Optional[MistralRsBackend] = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closing = False
        self.created = int(time.time())
        self.model_id = settings.model_name or ""

    # -- life -----------------------------------------------------------------------------

    def load(self) -> None:
        """Loads the model (blocking)."""
        s = self.settings
        model = s.model or str(default_model_path())
        backend = BackendType.MISTRALRS.create(device=s.device)
        assert isinstance(backend, MistralRsBackend)
        backend.load_model(
            model,
            filename=s.filename,
            chat_template=s.chat_template,
            max_context=s.max_context,
            max_batch=s.max_batch,
        )
        self._backend = backend
        if not self.model_id:
            path = Path(model)
            self.model_id = path.stem if path.suffix == ".gguf" else path.name or model

    def close(self) -> None:
        """Refuses new requests and frees the model."""
        with self._lock:
            self._closing = True
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.unload()

    @property
    def backend(self) -> MistralRsBackend:
        if self._backend is None or self._closing:
            raise ApiError(503, "the model is not loaded (the server is starting or stopping)", code="unavailable")
        return self._backend

    # -- requests -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def capacity(self) -> int:
        """Generations that may be running or waiting at once."""
        return self.settings.max_batch + self.settings.max_queue

    def check_model(self, model: Optional[str]) -> None:
        """A request naming another model is a 404 (no name: this one)."""
        if model is not None and model != self.model_id:
            raise ApiError(
                404,
                f"the model {model!r} does not exist; this server runs {self.model_id!r} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def admit(self, n: int) -> Admission:
        """Takes `n` places for a request (released by :meth:`Admission.release`); a full
        server answers 429."""
        with self._lock:
            if self._closing:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if self._in_flight + n > self.capacity:
                raise ApiError(
                    429,
                    f"the server is busy: {self._in_flight} generations are running or waiting "
                    f"(at most {self.capacity}); retry shortly",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            self._in_flight += n
        return Admission(self, n)

    def _release(self, n: int) -> None:
        with self._lock:
            self._in_flight -= n

    async def start(self, request: GenerateRequest, n: int) -> list[AsyncTokenStream]:
        """Starts `n` generations of `request` (choice `i` seeded `seed + i`); a bad request
        raises before any of them runs."""
        backend = self.backend

        def start_all() -> list[AsyncTokenStream]:
            streams: list[AsyncTokenStream] = []
            try:
                for i in range(n):
                    seed = None if request.seed is None else request.seed + i
                    streams.append(backend.agenerate_stream(dataclasses.replace(request, seed=seed)))
            except BaseException:
                for s in streams:
                    s.cancel()
                raise
            return streams

        try:
            # Tokenizing and compiling a grammar take milliseconds of native work: off the loop.
            return await asyncio.to_thread(start_all)
        except PcaiError as e:
            raise from_pcai_error(e) from None
