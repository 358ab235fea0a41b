"""The exceptions of pcai-inference: one hierarchy rooted at :class:`PcaiError`.

Every failure a user can cause reaches Python as one of these, with a message that says
what was wrong and what to do. Request-validation errors are also :class:`ValueError`.
"""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "DownloadError",
    "GenerationError",
    "InvalidImageError",
    "InvalidRequestError",
    "ModelClosedError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelNotLoadedError",
    "PcaiError",
    "UnsupportedModelError",
]


class PcaiError(Exception):
    """Base class of every error raised by pcai-inference."""


class ModelNotFoundError(PcaiError, FileNotFoundError):
    """The model path does not exist (the message names it)."""


class ModelFormatError(PcaiError):
    """The file or folder is not a model the engine can load (wrong format, truncated, ...)."""


class UnsupportedModelError(ModelFormatError):
    """The file is a well-formed model of an architecture this engine cannot run (the message
    names it and the supported ones)."""


class DeviceError(PcaiError):
    """The requested device is unknown, absent, or not compiled into this build."""


class InvalidRequestError(PcaiError, ValueError):
    """A request or argument is out of range; the message names the field."""


def check_text(value: str, field: str) -> str:
    """``value`` if it can be encoded as UTF-8 (a lone surrogate cannot); else a clear error."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequestError(
            f"{field} is not valid Unicode text: {e.reason} at position {e.start} ({value[e.start : e.end]!a})"
        ) from None
    return value


class InvalidImageError(InvalidRequestError):
    """An image in a request is not one the model can take: not an image, truncated, past the
    pixel limit (``max_image_pixels``), or too small for the model; the message says which."""


class ModelNotLoadedError(PcaiError):
    """The backend has no model: call ``load_model()`` first (or again after ``unload()``)."""


class GenerationError(PcaiError):
    """The engine failed while generating."""


class ModelClosedError(GenerationError):
    """``unload()`` ran while this generation was running; load the model again to generate."""


class DownloadError(PcaiError, ConnectionError):
    """A download from the Hugging Face hub failed (network, server, or a corrupt file that was
    removed); loading again retries. A missing repository or file is :class:`ModelNotFoundError`."""
