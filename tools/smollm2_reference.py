"""Writes llama.cpp's reference data for SmolLM2-135M-Instruct (Q4_1 GGUF): its token ids for
texts that stress the byte-level BPE tokenizer (the `smollm` pre-tokenizer), and for prompts
(plain and ChatML chat prompts) their ids and llama.cpp's greedy continuation. The test
tests/test_smollm2.py checks our tokenizer against these ids exactly and our generation
against an exact float64 model (tools/llama_exact_greedy.py).

Run with the benchmark's venv, which has llama-cpp-python (0.3.36):

    ~/.cache/pcai-inference/bench-venv/bin/python tools/smollm2_reference.py

It imports only llama_cpp, numpy and the standard library.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pypi_models import SMOLLM2, smollm2

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "smollm2-135m-reference.json"
CONTINUATION = 32
TOP_LOGITS = 8

TEXTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("single_space", " "),
    ("word", "Hello"),
    ("sentence", "Hello world, this is a test."),
    ("leading_space", " Hello world"),
    ("two_leading_spaces", "  Hello world"),
    ("trailing_spaces", "trailing spaces   "),
    ("space_runs", "a  b   c    d"),
    ("tabs", "col1\tcol2\t\tcol3"),
    ("newline", "line one\nline two"),
    ("blank_lines", "para one\n\n\npara two\n"),
    ("crlf", "windows\r\nline\r\n"),
    ("space_before_newline", "end   \n  indented"),
    ("digits", "1234567890"),
    ("number_in_text", "In 2024 there were 365 days and 8760 hours."),
    ("decimals", "pi is 3.14159, e is 2.71828; 1,000,000.5"),
    ("arithmetic", "12+34=46 and 7*8=56"),
    # Digits are split off before the GPT-2 regex runs: the spaces before them group differently.
    ("spaces_before_digits", "a  1   22    333"),
    ("indented_numbers", "x =  10\n  20"),
    ("versions", "v2.0  3D, abc123def 4five6"),
    ("contractions", "I'm sure you're right, they'll see it's what we'd've done."),
    ("contractions_upper", "DON'T YOU'RE IT'S I'VE"),
    ("quotes", "\"double\" and 'single' and `back`"),
    ("punctuation", "Wait... what?! (Really) [yes] {no} <maybe> #tag @user $5 %20 ^_^ ~ | \\"),
    ("python_code", "def add(a, b):\n    return a + b\n\nprint(add(1, 2))"),
    ("c_code", 'int main(void) {\n\tprintf("%d\\n", x);\n\treturn 0;\n}'),
    ("json", '{"name": "SmolLM", "size": 135, "tags": ["small", "fast"]}'),
    ("url", "See https://example.com/path?q=1&r=two#frag for details."),
    ("email", "mail me at first.last+tag@example.org"),
    ("accents_fr", "Ça coûte déjà trop cher, garçon ! Où est l'hôtel ?"),
    ("accents_de", "Größe, Übermäßig, Straße, Fräulein"),
    ("accents_es", "¿Qué tal? ¡Mañana será otro día!"),
    ("greek_cyrillic", "Αθήνα и Москва"),
    ("cjk_chinese", "你好，世界！我是一个语言模型。"),  # noqa: RUF001 (full-width punctuation on purpose)
    ("cjk_japanese", "日本の首都は東京です。"),
    ("korean", "안녕하세요 세계"),
    ("emoji", "I love it 😀👍🏽 🇫🇷 👨‍👩‍👧"),
    ("mixed_scripts", "English, 中文, русский, عربي, हिन्दी"),
    ("markdown", "# Title\n\n- item **bold** _it_\n1. first\n> quote"),
    ("html", '<div class="a"><p>Hi &amp; bye</p></div>'),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("repeated_chars", "aaaaaaaaaaaaaaaa ---------- ==== ...."),
    ("control_token_texts", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"),
    ("control_tokens_in_text", "The marker <|im_end|> ends a turn; <|im_start|>assistant starts one."),
]

SYSTEM = {"role": "system", "content": "You are a concise assistant."}
PLAIN_PROMPTS: list[tuple[str, str]] = [
    ("story", "Once upon a time, in a small village,"),
    ("capital", "The capital city of France is"),
    ("python", "def fibonacci(n):\n    "),
    ("science", "Water boils at a temperature of"),
    ("list", "Here are three tips for staying healthy:\n1."),
    ("math", "Question: What is 12 times 12?\nAnswer:"),
]
CHATS: list[tuple[str, list[dict[str, str]]]] = [
    ("chat_default_system", [{"role": "user", "content": "What is the capital of France?"}]),
    ("chat_system", [SYSTEM, {"role": "user", "content": "Name three primary colours."}]),
    (
        "chat_multi_turn",
        [
            {"role": "user", "content": "Hi! Who are you?"},
            {"role": "assistant", "content": "I am SmolLM, an AI assistant."},
            {"role": "user", "content": "Write a haiku about the sea."},
        ],
    ),
    ("chat_code", [SYSTEM, {"role": "user", "content": "Write a Python function that reverses a string."}]),
]


def render_chat(llm: llama_cpp.Llama, messages: list[dict[str, str]]) -> str:
    """The model's chat template rendered by llama-cpp-python's own formatter, as its
    create_chat_completion does for a GGUF that carries a template."""
    formatter = Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(llm._model.token_eos()),
        bos_token=llm._model.token_get_text(llm._model.token_bos()),
    )
    prompt: str = formatter(messages=messages).prompt
    return prompt


Greedy = tuple[list[int], list[float], list[list[tuple[int, float]]], str]


def greedy(llm: llama_cpp.Llama, prompt_ids: list[int]) -> Greedy:
    """llama.cpp's greedy continuation by eval + argmax over the live logits, token by token;
    stops after an end-of-generation token. Returns ids, top-2 margins, the best TOP_LOGITS
    (id, logit) pairs of each step, stop reason."""
    llm.reset()
    llm.eval(prompt_ids)
    ids: list[int] = []
    margins: list[float] = []
    tops: list[list[tuple[int, float]]] = []
    for _ in range(CONTINUATION):
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).astype(np.float64)
        best = np.argsort(-logits)[:TOP_LOGITS]
        token = int(best[0])
        ids.append(token)
        margins.append(float(logits[best[0]] - logits[best[1]]))
        tops.append([(int(i), float(logits[i])) for i in best])
        if llama_cpp.llama_token_is_eog(llm._model.vocab, token):
            return ids, margins, tops, "eog"
        llm.eval([token])
    return ids, margins, tops, "length"


def sampler_greedy(llm: llama_cpp.Llama, prompt_ids: list[int], n: int) -> list[int]:
    """The same continuation through llama.cpp's own sampler chain (temp 0, no penalties)."""
    llm.reset()
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(token))
        if len(out) == n:
            break
    return out


def main() -> None:
    path = smollm2()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=2, seed=0, verbose=False)

    def tok(text: str, add_bos: bool, special: bool) -> list[int]:
        return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)]

    texts: list[dict[str, Any]] = []
    for name, text in TEXTS:
        no_bos = tok(text, False, False)
        texts.append(
            {
                "id": name,
                "text": text,
                "ids_add_bos": tok(text, True, False),
                "ids_no_bos": no_bos,
                "ids_special": tok(text, False, True),
                "detokenized": llm.detokenize(no_bos).decode("utf-8"),
            }
        )

    prompts: list[dict[str, Any]] = []
    cases: list[tuple[str, str, bool, list[dict[str, str]] | None]] = [
        (name, text, False, None) for name, text in PLAIN_PROMPTS
    ]
    cases += [(name, render_chat(llm, messages), True, messages) for name, messages in CHATS]
    for name, prompt, special, messages in cases:
        ids = tok(prompt, True, special)
        continuation, margins, tops, stop = greedy(llm, ids)
        again, _, _, _ = greedy(llm, ids)
        assert again == continuation, name
        sampled = sampler_greedy(llm, ids, len(continuation))
        assert sampled == continuation, (name, sampled, continuation)
        entry: dict[str, Any] = {
            "id": name,
            "prompt": prompt,
            "parse_special": special,
            "prompt_token_ids": ids,
            "continuation_token_ids": continuation,
            "continuation_text": llm.detokenize(continuation).decode("utf-8", errors="replace"),
            "top1_top2_logit_margin": margins,
            "top_logits": tops,
            "stop_reason": stop,
        }
        if messages is not None:
            entry["messages"] = messages
        prompts.append(entry)

    data = {
        "model": path.name,
        "model_source": f"PyPI {SMOLLM2[0]}=={SMOLLM2[1]}, wheel member {SMOLLM2[2]}",
        "model_sha256": digest,
        "reference_engine": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "generated": datetime.date.today().isoformat(),
        "invocation": "~/.cache/pcai-inference/bench-venv/bin/python tools/smollm2_reference.py",
        "notes": (
            "Llama(model_path, n_ctx=2048, n_threads=2, seed=0, verbose=False). Texts: ids_add_bos = "
            "tokenize(text, add_bos=True, special=False); ids_no_bos = tokenize(text, add_bos=False, "
            "special=False); ids_special = tokenize(text, add_bos=False, special=True); detokenized = "
            "detokenize(ids_no_bos) as UTF-8. The GGUF has tokenizer.ggml.add_bos_token=false, so "
            "llama.cpp adds no BOS even with add_bos=True. Prompts: prompt_token_ids = tokenize(prompt, "
            "add_bos=True, special=parse_special); chat prompts are the GGUF's chat template rendered "
            "from `messages` by llama_cpp.llama_chat_format.Jinja2ChatFormatter (add_generation_prompt=True), "
            "tokenized with special=True. continuation_token_ids: "
            f"up to {CONTINUATION} greedy ids by eval + numpy argmax over the live logits, token by "
            "token, stopping after an end-of-generation token (stop_reason 'eog', the token included); "
            "computed twice (identical) and equal to llm.generate(temp=0.0, repeat_penalty=1.0). "
            "top1_top2_logit_margin: raw-logit gap between the best and second-best token per step; "
            f"top_logits: the {TOP_LOGITS} best [id, raw logit] pairs per step."
        ),
        "texts": texts,
        "prompts": prompts,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(texts)} texts, {len(prompts)} prompts")


if __name__ == "__main__":
    main()
