"""The Hugging Face environment, read when a model is loaded.

The same variables and defaults as ``huggingface_hub``, so both share one cache and one token;
they are read at each call (not once at import), so a program may change them as it runs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional

__all__ = ["HubSettings", "ProgressCallback"]

ProgressCallback = Callable[[int, int], None]
"""Called as bytes arrive: ``(bytes done, bytes in all)``, over every file of one load."""

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def _path(name: str) -> Optional[Path]:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


@dataclasses.dataclass(frozen=True)
class HubSettings:
    """Where the hub is, where its files are cached, and how to reach it."""

    endpoint: str
    """``HF_ENDPOINT``, default ``https://huggingface.co``."""
    cache_dir: Path
    """``HF_HUB_CACHE``, else ``$HF_HOME/hub``; ``HF_HOME`` defaults to ``~/.cache/huggingface``."""
    offline: bool
    """``HF_HUB_OFFLINE=1``: only the cache is used, the network never."""
    token: Optional[str] = dataclasses.field(default=None, repr=False)
    """``HF_TOKEN``, else the token file (``HF_TOKEN_PATH``, default ``$HF_HOME/token``)."""
    show_progress: bool = True
    """False with ``HF_HUB_DISABLE_PROGRESS_BARS=1``."""

    @classmethod
    def from_environment(cls) -> HubSettings:
        xdg = _path("XDG_CACHE_HOME") or Path.home() / ".cache"
        hf_home = _path("HF_HOME") or xdg / "huggingface"
        cache_dir = _path("HF_HUB_CACHE") or _path("HUGGINGFACE_HUB_CACHE") or hf_home / "hub"
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if not token:
            token_file = _path("HF_TOKEN_PATH") or hf_home / "token"
            try:
                token = token_file.read_text(encoding="utf-8")
            except OSError:
                token = None
        token = token.strip() if token else None
        return cls(
            endpoint=(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
            cache_dir=cache_dir,
            offline=_flag("HF_HUB_OFFLINE"),
            token=token or None,
            show_progress=not _flag("HF_HUB_DISABLE_PROGRESS_BARS"),
        )
