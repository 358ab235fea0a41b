"""A GGUF file's tokenizer on its own, without loading the model (like llama.cpp's vocab-only)."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

from . import _core
from .errors import InvalidRequestError, check_text

__all__ = ["Tokenizer"]


class Tokenizer:
    """Text to token ids and back, exactly as a loaded model of the same file tokenizes."""

    def __init__(self, native: _core.NativeTokenizer) -> None:
        self._native = native

    @classmethod
    def from_gguf(cls, path: Union[str, os.PathLike[str]]) -> Tokenizer:
        """Reads the tokenizer of a ``.gguf`` file (only its metadata is read)."""
        return cls(_core.NativeTokenizer.from_gguf(os.fspath(path)))

    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. Control tokens' texts in it (``<start_of_turn>``,
        ``<|im_start|>``) are read as text unless ``parse_special`` (llama.cpp's meaning)."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a str, got {type(text).__name__}")
        for name, flag in (("add_special_tokens", add_special_tokens), ("parse_special", parse_special)):
            if not isinstance(flag, bool):
                raise InvalidRequestError(f"{name} must be True or False, got {flag!r}")
        return self._native.tokenize(check_text(text, "the text"), add_special_tokens, parse_special)

    def detokenize(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._native.detokenize(list(ids), skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    @property
    def bos_id(self) -> Optional[int]:
        return self._native.bos_id

    def to_json(self) -> str:
        """The tokenizer as a Hugging Face ``tokenizer.json`` document (loadable with the
        ``tokenizers`` library; the BOS rule is ``bos_id``, applied by :meth:`tokenize`)."""
        return self._native.to_json()

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Writes :meth:`to_json` to ``path`` (e.g. ``folder/tokenizer.json``)."""
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @property
    def eog_ids(self) -> list[int]:
        """Token ids that end generation (EOS and end-of-turn tokens)."""
        return self._native.eog_ids
