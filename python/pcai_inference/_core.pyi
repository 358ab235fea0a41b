"""Type stubs for the native module ``pcai_inference._core`` (Rust, PyO3)."""

from typing import Optional, Union

__version__: str
MISTRALRS_VERSION: str

class NativeModel:
    """A model loaded in the engine."""

    @staticmethod
    def load_gguf(
        path: str,
        device: str = "auto",
        chat_template: Optional[str] = None,
        max_context: Optional[int] = None,
        tokenizer: Optional[str] = None,
        max_batch: Optional[int] = None,
    ) -> NativeModel: ...
    @staticmethod
    def load_folder(
        path: str,
        device: str = "auto",
        chat_template: Optional[str] = None,
        max_context: Optional[int] = None,
        tokenizer: Optional[str] = None,
        dtype: str = "auto",
        isq: Optional[str] = None,
        max_batch: Optional[int] = None,
    ) -> NativeModel: ...
    @property
    def input_modalities(self) -> list[str]: ...
    @property
    def device(self) -> str: ...
    @property
    def context_window(self) -> int: ...
    @property
    def max_batch(self) -> int: ...
    @property
    def model_path(self) -> str: ...
    @property
    def architecture(self) -> Optional[str]: ...
    @property
    def eog_ids(self) -> list[int]: ...
    @property
    def is_loaded(self) -> bool: ...
    @property
    def tokenizer(self) -> NativeTokenizer: ...
    @property
    def chat_template_origin(self) -> str: ...
    @property
    def chat_template(self) -> str: ...
    def chat_prompt(self, messages_json: str) -> list[int]: ...
    def start(
        self,
        prompt_ids: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        min_p: float,
        stop: list[str],
        seed: Optional[int],
        repetition_penalty: float,
        presence_penalty: float,
        frequency_penalty: float,
        logit_bias: list[tuple[int, float]],
        logprobs: bool = False,
        top_logprobs: int = 0,
        json_schema: Optional[str] = None,
        regex: Optional[str] = None,
        grammar: Optional[str] = None,
        messages_json: Optional[str] = None,
        images: list[tuple[bytes, int, int]] = ...,
        audios: list[tuple[bytes, int, int]] = ...,
        max_image_pixels: int = ...,
    ) -> NativeGeneration: ...
    def unload(self) -> None: ...

class NativeGeneration:
    """One running generation."""

    def next(self, timeout: float) -> Optional[tuple[str, Optional[dict[str, Union[str, int, float, list[int]]]]]]: ...
    def cancel(self) -> Optional[dict[str, Union[str, int, float, list[int]]]]: ...
    def wait_engine_release(self, timeout: float) -> Optional[int]: ...
    @property
    def done(self) -> bool: ...

class NativeTokenizer:
    """The tokenizer of a GGUF file, without the model's weights."""

    @staticmethod
    def from_gguf(path: str) -> NativeTokenizer: ...
    def tokenize(self, text: str, add_special_tokens: bool = True, parse_special: bool = False) -> list[int]: ...
    def detokenize(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def eog_ids(self) -> list[int]: ...
    @property
    def bos_id(self) -> Optional[int]: ...
    def to_json(self) -> str: ...

def build_features() -> list[str]: ...
def resolve_device_name(spec: str) -> str: ...
def cpu_kernels() -> list[tuple[str, bool, bool]]: ...
def engine_patches() -> list[str]: ...
