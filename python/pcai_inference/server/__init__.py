"""The OpenAI-compatible HTTP server (``pip install "pcai-inference[server]"``).

``pcai-inference serve --model MODEL`` or ``python -m pcai_inference.server``; in code,
:func:`create_app` gives the FastAPI app around a :class:`ModelService`.
"""

from __future__ import annotations

from .app import create_app
from .model_service import ModelService
from .run import serve
from .settings import API_KEY_ENV, ServerSettings

__all__ = ["API_KEY_ENV", "ModelService", "ServerSettings", "create_app", "serve"]
