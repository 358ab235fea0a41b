"""How a server is configured: the model, the address, the limits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidRequestError

__all__ = ["API_KEY_ENV", "ServerSettings"]

API_KEY_ENV = "PCAI_API_KEY"
"""The environment variable holding the API key when ``--api-key`` is not given."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``pcai-inference serve`` takes. ``None`` model: the embedded default model."""

    model: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: Optional[str] = None
    """Clients must send ``Authorization: Bearer <key>``; ``None``: no key needed."""
    max_batch: int = 8
    """Requests the engine runs together in one step."""
    max_queue: int = 64
    """Requests that may wait for a place in the batch; more are refused with 429."""
    chat_template: Optional[str] = None
    """A Jinja chat template (file path or text) replacing the model's."""
    model_name: Optional[str] = None
    """The id clients name the model by (default: the model file's or folder's name)."""
    max_context: Optional[int] = None
    device: str = "auto"
    filename: Optional[str] = None
    max_body_bytes: int = 32 * 1024 * 1024
    """Larger request bodies are refused with 413 (images travel as base64 inside them)."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, running requests get this long to finish."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "port", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "port" else 1):
                raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise InvalidRequestError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if self.api_key is not None and not self.api_key:
            raise InvalidRequestError("api_key must not be empty")

    @staticmethod
    def api_key_from_env() -> Optional[str]:
        return os.environ.get(API_KEY_ENV) or None
