"""Images and sounds in every form users hold them, turned into bytes for the native core.

An image is a path, encoded bytes (PNG, JPEG, WebP, ...), a ``data:`` URL, an ``http(s)`` URL,
a PIL image, or a numpy ``H x W x 3`` (or ``H x W x 4``, ``H x W``) uint8 array. Encoded images
are decoded in Rust, which reads their size from the header and refuses one past the pixel
limit before decoding; arrays and PIL images go over as raw RGB rows.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .errors import DownloadError, InvalidImageError, InvalidRequestError

__all__ = ["AudioInput", "ImageInput", "NativeAudio", "NativeImage", "audio_bytes", "image_bytes"]

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]
"""A path, bytes, a ``data:`` or ``http(s)`` URL, a PIL image or a numpy uint8 array."""

AudioInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]
"""A path, encoded bytes (WAV, FLAC, MP3, Ogg), a ``data:`` or ``http(s)`` URL, or float
samples (a numpy array, mono ``(n,)`` or ``(n, channels)``) with their sample rate."""

# An http(s) image or sound larger than this is refused while downloading.
MAX_DOWNLOAD_BYTES = 64 << 20
DOWNLOAD_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class NativeImage:
    """What the native core takes: encoded bytes (``width == 0``) or raw RGB rows."""

    data: bytes
    width: int = 0
    height: int = 0

    def as_tuple(self) -> tuple[bytes, int, int]:
        return (self.data, self.width, self.height)


def _encoded(value: Any, what: str, error: type[Exception]) -> bytes | None:
    """The bytes of an encoded file given as bytes, a path or a URL; ``None`` for other forms."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        return _data_url(value, what, error)
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return _download(value, what, error)
    if isinstance(value, (str, os.PathLike)):
        path = Path(os.fspath(value)).expanduser()
        if not path.is_file():
            raise error(f"{what}: no file at {path}")
        return path.read_bytes()
    return None


def image_bytes(image: ImageInput, what: str = "the image") -> NativeImage:
    encoded = _encoded(image, what, InvalidImageError)
    if encoded is not None:
        return NativeImage(encoded)
    if hasattr(image, "convert") and hasattr(image, "tobytes") and hasattr(image, "mode"):  # PIL, any mode
        rgb = image.convert("RGB")
        width, height = rgb.size
        return NativeImage(rgb.tobytes(), width, height)
    if hasattr(image, "__array_interface__") or (hasattr(image, "shape") and hasattr(image, "dtype")):
        return _from_array(image, what)
    raise InvalidImageError(
        f"{what} is a {type(image).__name__}; give a path, bytes, a data: or http(s) URL, "
        "a PIL image or a numpy uint8 array"
    )


def _data_url(url: str, what: str, error: type[Exception]) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise error(f"{what}: a data URL must look like data:<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise error(f"{what}: the data URL's base64 is damaged ({e})") from None


def _download(url: str, what: str, error: type[Exception]) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            data: bytes = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"{what}: could not download {url}: {e}") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise error(f"{what}: {url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
    return data


def _from_array(array: Any, what: str) -> NativeImage:
    import numpy as np

    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise InvalidImageError(f"{what}: a numpy image must be uint8 (0..255), got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InvalidImageError(f"{what}: a numpy image must be H x W x 3 (RGB), got shape {a.shape}")
    rgb = np.ascontiguousarray(a[:, :, :3])
    height, width = rgb.shape[:2]
    if not width or not height:
        raise InvalidImageError(f"{what} is empty ({width} x {height} pixels)")
    return NativeImage(rgb.tobytes(), int(width), int(height))


@dataclass(frozen=True)
class NativeAudio:
    """What the native core takes: encoded bytes (``sample_rate == 0``) or float32 samples."""

    data: bytes
    sample_rate: int = 0
    channels: int = 1

    def as_tuple(self) -> tuple[bytes, int, int]:
        return (self.data, self.sample_rate, self.channels)


def audio_bytes(audio: AudioInput, sample_rate: int | None, what: str = "the audio") -> NativeAudio:
    encoded = _encoded(audio, what, InvalidRequestError)
    if encoded is not None:
        if sample_rate is not None:
            raise InvalidRequestError(f"{what}: sample_rate goes with float samples; an encoded sound carries its own")
        return NativeAudio(encoded)
    if not (hasattr(audio, "shape") and hasattr(audio, "dtype")):
        raise InvalidRequestError(
            f"{what} is a {type(audio).__name__}; give a path, bytes, a data: or http(s) URL, "
            "or a numpy array of samples with sample_rate="
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InvalidRequestError(f"{what}: float samples need sample_rate= (e.g. 16000), got {sample_rate!r}")
    import numpy as np

    a = np.asarray(audio)
    if a.ndim not in (1, 2) or a.size == 0:
        raise InvalidRequestError(f"{what}: samples must be (n,) or (n, channels), got shape {a.shape}")
    channels = 1 if a.ndim == 1 else int(a.shape[1])
    return NativeAudio(np.ascontiguousarray(a, dtype="<f4").tobytes(), sample_rate, channels)
