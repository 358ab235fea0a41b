"""Chat: the model's template, a template given at load time, and no template at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pcai_inference import BackendType, ChatMessage, FinishReason, InferenceBackend, InvalidRequestError, TextPart
from pcai_inference.mistralrs_backend import MistralRsBackend

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}{{ p['text'] }}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_a_model_without_a_template_chats_through_the_plain_transcript(backend: InferenceBackend) -> None:
    """The default model is a base model with no chat template: chat uses the documented fallback
    (as llama-cpp-python and LM Studio do) and says so; the answer stops before the next turn."""
    assert isinstance(backend, MistralRsBackend)
    assert backend.chat_template_origin == "fallback"
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}]
    transcript = "Answer briefly.\n\nUser: Hi\nAssistant:"
    assert backend.chat_prompt_ids(messages) == backend.tokenize(transcript)
    r = backend.chat(messages, max_tokens=48, temperature=0.0)
    assert r.prompt_tokens == len(backend.tokenize(transcript))
    assert "\nUser:" not in r.text
    alone = backend.generate(transcript, max_tokens=48, temperature=0.0)
    # The same greedy continuation, ending where the model starts the user's next line.
    assert alone.text.startswith(r.text)
    if r.finish_reason is FinishReason.STOP_SEQUENCE:
        assert alone.text[len(r.text) :].startswith("\nUser:")


@pytest.fixture(scope="module")
def chat_backend(model_path: Path) -> InferenceBackend:
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path, chat_template=GEMMA_TEMPLATE)
    return b


def test_chat_with_a_template_string(chat_backend: InferenceBackend) -> None:
    r = chat_backend.chat([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0.0)
    # The rendered prompt: BOS + turn markers + text, as the template says; the control tokens
    # are single tokens.
    rendered = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert r.prompt_tokens == len(chat_backend.tokenize(rendered, add_special_tokens=True, parse_special=True)) == 10
    assert r.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)


def test_chat_messages_as_parts_and_dataclasses(chat_backend: InferenceBackend) -> None:
    a = chat_backend.chat([ChatMessage("user", [TextPart("Hi")])], max_tokens=8, temperature=0.0)
    b = chat_backend.chat([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0.0)
    assert a.text == b.text and a.prompt_tokens == b.prompt_tokens


def test_chat_template_from_a_file(model_path: Path, tmp_path: Path) -> None:
    f = tmp_path / "template.txt"
    f.write_text(GEMMA_TEMPLATE)
    b = BackendType.MISTRALRS.create(device="cpu")
    b.load_model(model_path, chat_template=str(f))
    from_file = b.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
    assert from_file.prompt_tokens == 10
    b.unload()


def test_missing_template_file(model_path: Path, tmp_path: Path) -> None:
    from pcai_inference import ModelNotFoundError

    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelNotFoundError, match="chat template file"):
        b.load_model(model_path, chat_template=str(tmp_path / "missing.jinja"))


def test_broken_template_is_rejected_at_load(model_path: Path) -> None:
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(InvalidRequestError, match="does not parse"):
        b.load_model(model_path, chat_template="{% for %}")


def test_bad_messages() -> None:
    from pcai_inference import GenerateRequest

    with pytest.raises(InvalidRequestError, match="role"):
        GenerateRequest(messages=({"content": "x"},))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="empty"):
        GenerateRequest(messages=())
    with pytest.raises(InvalidRequestError, match="content part"):
        GenerateRequest(messages=({"role": "user", "content": [{"type": "video", "url": "x"}]},))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_with_template(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the model with a chat template embedded (tokenizer.chat_template)."""
    out = tmp_path_factory.mktemp("templated") / "gemma-with-template.gguf"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--force",
            "--chat-template",
            GEMMA_TEMPLATE,
            str(model_path),
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return out


def test_chat_uses_the_template_embedded_in_the_gguf(model_with_template: Path) -> None:
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(model_with_template)
        r = b.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
        assert r.prompt_tokens == 10


def test_chat_template_argument_overrides_the_embedded_one(model_with_template: Path) -> None:
    plain = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(model_with_template, chat_template=plain)
        r = b.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0)
        assert r.prompt_tokens == len(b.tokenize("Hi\n"))
