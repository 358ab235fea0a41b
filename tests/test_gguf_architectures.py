"""The GGUF architectures the engine runs besides Gemma 3, each on a tiny random-weight file written
by tests/tiny_gguf.py (Qwen 2, Qwen 3, Phi-3, Phi-4, Mistral as `llama` and as `mistral3`, Llama 3.1's
rotary factors), through the public API: the file loads;
its tokenization equals an independent tokenizer of the same vocabulary (`tokenizers` for
byte-level BPE, `sentencepiece` for SentencePiece-BPE); chat prompts follow the file's template;
greedy generation computes what a float64 forward pass of the architecture computes
(tests/tiny_gguf_reference.py), streams what it returns, and batches to the bit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import pytest
import sentencepiece as spm
from tiny_gguf import (
    CONTROL,
    NORMAL,
    QWEN2_SPLIT,
    TRICKY_TEXTS,
    UNKNOWN,
    USER_DEFINED,
    TinyModel,
    byte_level_pre_tokenizer,
    write_all,
    write_model,
)
from tiny_gguf_reference import ReferenceModel
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models

from pcai_inference import (
    BackendType,
    FinishReason,
    GenerateRequest,
    InferenceBackend,
    StreamChunk,
    UnsupportedModelError,
)

TEXTS = TRICKY_TEXTS
# Every family's control-token texts (as text unless parse_special), in every family's vocabulary.
SPECIAL_TEXTS = [
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|user|>\nHi<|end|>\n<|assistant|>\n",
    "<s>[INST] Hi [/INST]</s>",
    "<unk> and <think>a thought</think> and <|not special|>",
]
PROMPTS = [
    "The quick brown fox jumps over the lazy dog",
    "Hello world",
    "def square(x):\n    return",
    "Café naïve — 日本語",
]
CHAT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a story."},
]
STEPS = 24
# Largest difference between the engine's and the float64 reference's log-probabilities (the
# engine rounds the inputs of its quantized products to 8 bits); about 0.15 here with F16
# activations, before they became F32 on the CPU, while a wrong rotary style, rotary base, norm
# or bias gives 0.8 to 15.
TOLERANCE = 0.3


class ReferenceTokenizer:
    """The vocabulary tokenized by the library it was trained with, as llama.cpp reads GGUF:
    control texts are text unless `parse_special`; user-defined tokens are always matched."""

    def __init__(self, tiny: TinyModel) -> None:
        v = tiny.vocab
        self.bos = v.bos if v.add_bos else None
        self.specials = [t for t, ty in zip(v.tokens, v.types, strict=True) if ty in (CONTROL, UNKNOWN, USER_DEFINED)]
        self.sp: spm.SentencePieceProcessor | None = None
        self.hf: HFTokenizer | None = None
        if v.sentencepiece_model is not None:
            self.sp = spm.SentencePieceProcessor(model_file=str(v.sentencepiece_model))
            pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
            assert v.tokens[: len(pieces)] == pieces
        else:
            merges = [(left, right) for left, right in (m.split(" ") for m in v.merges)]
            self.hf = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(v.tokens)}, merges=merges))
            self.hf.pre_tokenizer = byte_level_pre_tokenizer(QWEN2_SPLIT)
            self.hf.decoder = decoders.ByteLevel()
            self.hf.add_special_tokens([t for t, ty in zip(v.tokens, v.types, strict=True) if ty == CONTROL])
            self.hf.add_tokens([t for t, ty in zip(v.tokens, v.types, strict=True) if ty == USER_DEFINED])
        self.ids = {t: i for i, t in enumerate(v.tokens)}

    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        if self.hf is not None:
            self.hf.encode_special_tokens = not parse_special
            return list(self.hf.encode(text, add_special_tokens=False).ids)
        assert self.sp is not None
        if not parse_special:
            return list(self.sp.encode(text)) if text else []
        # llama.cpp: the control texts are tokens; each text fragment is SentencePiece's (its
        # dummy prefix included, as llama.cpp prefixes a space after every control token).
        pattern = "(" + "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for i, part in enumerate(re.split(pattern, text)):
            if i % 2:
                ids.append(self.ids[part])
            elif part:
                ids += self.sp.encode(part)
        return ids

    def with_bos(self, ids: list[int]) -> list[int]:
        return ids if self.bos is None else [self.bos, *ids]

    def decode(self, ids: list[int]) -> str:
        if self.hf is not None:
            return str(self.hf.decode(ids, skip_special_tokens=False))
        assert self.sp is not None
        return str(self.sp.decode(ids))


@dataclass(frozen=True)
class Loaded:
    tiny: TinyModel
    backend: InferenceBackend
    reference: ReferenceTokenizer


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    return {m.name: m for m in write_all(tmp_path_factory.mktemp("tiny-gguf"))}


@pytest.fixture(scope="module", params=["qwen2", "qwen3", "phi3", "mistral", "mistral3", "llama3", "phi4"])
def loaded(request: pytest.FixtureRequest, written: dict[str, TinyModel]) -> Iterator[Loaded]:
    tiny = written[request.param]
    backend = BackendType.MISTRALRS.create(device="cpu")
    backend.load_model(tiny.path)
    yield Loaded(tiny, backend, ReferenceTokenizer(tiny))
    backend.unload()


def greedy(prompt: str, **kw: object) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, max_tokens=STEPS, temperature=0.0, logprobs=True, **kw)  # type: ignore[arg-type]


def test_loads_with_its_vocabulary_and_template(loaded: Loaded) -> None:
    b, v = loaded.backend, loaded.tiny.vocab
    assert b._native().architecture == loaded.tiny.layout.arch  # type: ignore[attr-defined]
    assert b.tokenizer.vocab_size == len(v.tokens)  # type: ignore[attr-defined]
    assert b.chat_template_origin == "model"  # type: ignore[attr-defined]
    assert v.eos in b.tokenizer.eog_ids  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", TEXTS + SPECIAL_TEXTS)
def test_tokenize_equals_the_reference_tokenizer(loaded: Loaded, text: str) -> None:
    b, ref = loaded.backend, loaded.reference
    expected = ref.encode(text)
    assert b.tokenize(text, add_special_tokens=False) == expected
    assert b.tokenize(text) == ref.with_bos(expected)
    assert b.detokenize(expected) == ref.decode(expected)


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
def test_control_texts_are_tokens_with_parse_special(loaded: Loaded, text: str) -> None:
    b, ref = loaded.backend, loaded.reference
    expected = ref.encode(text, parse_special=True)
    assert b.tokenize(text, add_special_tokens=False, parse_special=True) == expected


def test_chat_prompt_is_the_rendered_template(loaded: Loaded) -> None:
    b, v, ref = loaded.backend, loaded.tiny.vocab, loaded.reference
    bos = v.tokens[v.bos] if v.bos is not None else ""
    rendered = (
        jinja2.Environment()
        .from_string(v.chat_template or "")
        .render(messages=CHAT, add_generation_prompt=True, bos_token=bos, eos_token=v.tokens[v.eos])
    )
    ids = ref.encode(rendered, parse_special=True)
    # One BOS: the template's own, else the one the model asks for (as llama.cpp does).
    expected = ids if ids[:1] == [v.bos] else ref.with_bos(ids)
    assert b.chat_prompt_ids(CHAT) == expected  # type: ignore[attr-defined]


# A greedy generation: ids, log-probabilities, text, finish reason.
Outcome = tuple[tuple[int, ...], tuple[float, ...], str, FinishReason]


@pytest.fixture(scope="module")
def generations(loaded: Loaded) -> dict[str, Outcome]:
    """Each prompt's greedy generation, run alone: ids, log-probabilities, text, finish."""
    out = {}
    for p in PROMPTS:
        r = loaded.backend.generate(greedy(p))
        assert r.token_logprobs is not None
        out[p] = (r.token_ids, r.token_logprobs, r.text, r.finish_reason)
    return out


def test_greedy_generation_runs_to_length_or_an_end_token(loaded: Loaded, generations: dict[str, Outcome]) -> None:
    eog = set(loaded.backend.tokenizer.eog_ids)  # type: ignore[attr-defined]
    for ids, logprobs, _, finish in generations.values():
        assert len(logprobs) == len(ids)
        assert (finish is FinishReason.LENGTH and len(ids) == STEPS) or (
            finish is FinishReason.STOP and len(ids) < STEPS
        )
        assert all(0 <= i < len(loaded.tiny.vocab.tokens) and i not in eog for i in ids)
    assert any(finish is FinishReason.LENGTH for *_, finish in generations.values())


def test_greedy_generation_is_the_architecture_s_forward_pass(loaded: Loaded, generations: dict[str, Outcome]) -> None:
    """Teacher-forced on our ids: each chosen token is the reference's best (within the
    tolerance), with the reference's log-probability; an early stop is the reference's choice too."""
    model = ReferenceModel(str(loaded.tiny.path))
    eog = loaded.backend.tokenizer.eog_ids  # type: ignore[attr-defined]
    for prompt, (ids, logprobs, _, finish) in generations.items():
        prompt_ids = loaded.backend.tokenize(prompt)
        rows = model.log_probs(prompt_ids + list(ids))[len(prompt_ids) - 1 :]
        for step, (token, logprob) in enumerate(zip(ids, logprobs, strict=True)):
            row = rows[step]
            assert row.max() - row[token] <= TOLERANCE, (prompt, step)
            assert abs(row[token] - logprob) <= TOLERANCE, (prompt, step, row[token], logprob)
        if finish is FinishReason.STOP:
            assert rows[len(ids)].max() - rows[len(ids)][eog].max() <= TOLERANCE, prompt


def test_logits_depend_on_the_input(loaded: Loaded) -> None:
    first = [loaded.backend.generate(p, max_tokens=1, temperature=0.0, top_logprobs=5).top_logprobs for p in PROMPTS]
    assert len({str(t) for t in first}) == len(PROMPTS)


def test_stream_equals_blocking(loaded: Loaded, generations: dict[str, Outcome]) -> None:
    for prompt, (ids, logprobs, text, finish) in generations.items():
        chunks = list(loaded.backend.generate_stream(greedy(prompt)))
        last = chunks[-1]
        assert "".join(c.text for c in chunks).encode() == text.encode()
        assert (last.token_ids, last.token_logprobs, last.finish_reason) == (ids, logprobs, finish)


def test_concurrent_requests_batched_equal_each_alone(loaded: Loaded, generations: dict[str, Outcome]) -> None:
    batch = [PROMPTS[0], *PROMPTS]  # equal and unequal lengths
    streams = [loaded.backend.generate_stream(greedy(p)) for p in batch]

    def drained(stream: Iterator[StreamChunk]) -> tuple[object, object]:
        *_, last = stream
        return last.token_ids, last.token_logprobs

    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        together = list(pool.map(drained, streams))
    assert together == [generations[p][:2] for p in batch]


def _piece_bytes(tiny: TinyModel, token: int) -> bytes:
    """What llama.cpp prints for a token: a SentencePiece piece with its spaces, a byte-level
    token's bytes."""
    piece = tiny.vocab.tokens[token]
    if tiny.vocab.model == "llama":
        return piece.replace("\u2581", " ").encode()
    alphabet = {c: i for i, c in enumerate(_byte_level_alphabet())}
    return bytes(alphabet[c] for c in piece)


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-character map, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _is_text(tiny: TinyModel, token: int) -> bool:
    try:
        _piece_bytes(tiny, token).decode()
    except UnicodeDecodeError:
        return False
    return True


def test_text_is_the_generated_pieces(loaded: Loaded) -> None:
    """With only whole-character pieces allowed (no byte, control or partial-character tokens),
    the text is the pieces' text, after the prompt."""
    tiny = loaded.tiny
    banned = {i: float("-inf") for i, ty in enumerate(tiny.vocab.types) if ty != NORMAL or not _is_text(tiny, i)}
    for prompt in PROMPTS:
        r = loaded.backend.generate(greedy(prompt, logit_bias=banned))
        assert len(r.token_ids) == STEPS
        assert r.text == b"".join(_piece_bytes(tiny, i) for i in r.token_ids).decode()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"long_rope_factors": True}, "long-context RoPE factors"),
        ({"tied": True}, "tied to the token embedding"),
        ({"rope_dims": 12}, "rotates 12 of each head's 16 dimensions"),
    ],
)
def test_phi3_layouts_the_engine_cannot_compute_are_refused(
    written: dict[str, TinyModel], tmp_path: Path, change: dict[str, object], why: str
) -> None:
    """Phi-3.5-mini / Phi-4-mini layouts the engine's Phi-3 model does not read (it computed
    wrong output or failed mid-generation) are refused at load, naming what is missing."""
    phi3 = written["phi3"]
    path = tmp_path / "phi3-variant.gguf"
    write_model(path, replace(phi3.layout, **change), phi3.vocab)  # type: ignore[arg-type]
    backend = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(UnsupportedModelError, match=re.escape(why)):
        backend.load_model(path)
