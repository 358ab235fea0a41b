"""pcai-inference: run LLMs on your own PC, on the mistral.rs engine.

>>> from pcai_inference import BackendType, GenerateRequest
>>> backend = BackendType.MISTRALRS.create(device="auto")
>>> backend.load_model("gemma-3-270m-q4_k_m.gguf")
>>> backend.generate("The history of Rome", max_tokens=16).text
"""

from __future__ import annotations

from ._cpu_check import check_cpu

check_cpu()  # before the native module: an older x86-64 CPU gets ImportError, not SIGILL

from ._log import configure_logging  # noqa: E402

configure_logging()

try:
    from . import _core
except ImportError as e:  # the CUDA wheel on a machine without the NVIDIA driver or CUDA 13 libraries
    missing = next((lib for lib in ("libcuda", "libcudart", "libcublas", "libcurand") if lib in str(e)), None)
    if missing is None:
        raise
    raise ImportError(
        f"this is the CUDA build of pcai-inference and {missing} cannot be loaded ({e}). It needs the NVIDIA "
        'driver (libcuda.so.1) and CUDA 13\'s libraries: pip install "pcai-inference[cuda]". On a machine without '
        "an NVIDIA GPU, install the CPU wheel instead."
    ) from e
from .backend import BackendType, InferenceBackend  # noqa: E402
from .default_model import default_model_path  # noqa: E402
from .errors import (  # noqa: E402
    DeviceError,
    DownloadError,
    GenerationError,
    InvalidImageError,
    InvalidRequestError,
    ModelClosedError,
    ModelFormatError,
    ModelNotFoundError,
    ModelNotLoadedError,
    PcaiError,
    UnsupportedModelError,
)
from .hub_settings import ProgressCallback  # noqa: E402
from .info import build_info  # noqa: E402
from .mistralrs_backend import MistralRsBackend  # noqa: E402
from .streaming import AsyncTokenStream, TokenStream  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402
from .types import (  # noqa: E402
    AudioPart,
    ChatMessage,
    ContentPart,
    FinishReason,
    GenerateRequest,
    GenerateResponse,
    ImagePart,
    StreamChunk,
    TextPart,
    Timings,
)

__version__: str = _core.__version__

__all__ = [
    "AsyncTokenStream",
    "AudioPart",
    "BackendType",
    "ChatMessage",
    "ContentPart",
    "DeviceError",
    "DownloadError",
    "FinishReason",
    "GenerateRequest",
    "GenerateResponse",
    "GenerationError",
    "ImagePart",
    "InferenceBackend",
    "InvalidImageError",
    "InvalidRequestError",
    "MistralRsBackend",
    "ModelClosedError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ModelNotLoadedError",
    "PcaiError",
    "ProgressCallback",
    "StreamChunk",
    "TextPart",
    "Timings",
    "TokenStream",
    "Tokenizer",
    "UnsupportedModelError",
    "build_info",
    "default_model_path",
]
