"""Every sampling parameter is honoured: each test changes one and sees its effect."""

from __future__ import annotations

from pcai_inference import GenerateRequest, InferenceBackend

PROMPT = "Once upon a time, in a small village,"


def text(backend: InferenceBackend, **kw: object) -> str:
    params: dict[str, object] = {"prompt": PROMPT, "max_tokens": 24}
    params.update(kw)
    return backend.generate(GenerateRequest(**params)).text  # type: ignore[arg-type]


def greedy(backend: InferenceBackend) -> str:
    return text(backend, temperature=0.0)


def test_same_seed_reproduces_at_temperature_one(backend: InferenceBackend) -> None:
    kw = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert text(backend, seed=7, **kw) == text(backend, seed=7, **kw)


def test_different_seeds_differ(backend: InferenceBackend) -> None:
    kw = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    outputs = {text(backend, seed=s, **kw) for s in range(4)}
    assert len(outputs) >= 3, outputs


def test_sampling_differs_from_greedy(backend: InferenceBackend) -> None:
    kw = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert any(text(backend, seed=s, **kw) != greedy(backend) for s in range(3))


def test_top_k_one_equals_greedy(backend: InferenceBackend) -> None:
    for seed in (1, 2):
        assert text(backend, temperature=1.5, top_k=1, top_p=1.0, min_p=0.0, seed=seed) == greedy(backend)


def test_tiny_top_p_equals_greedy(backend: InferenceBackend) -> None:
    """top_p keeps only the most likely token when it is tiny: sampling becomes greedy."""
    for seed in (1, 2):
        assert text(backend, temperature=1.5, top_k=0, top_p=1e-6, min_p=0.0, seed=seed) == greedy(backend)


def test_min_p_one_equals_greedy(backend: InferenceBackend) -> None:
    """min_p=1 keeps only tokens as likely as the best one."""
    for seed in (1, 2):
        assert text(backend, temperature=1.5, top_k=0, top_p=1.0, min_p=1.0, seed=seed) == greedy(backend)


def test_top_k_and_top_p_change_sampled_output(backend: InferenceBackend) -> None:
    base = {"temperature": 1.5, "seed": 3, "min_p": 0.0}
    wide = text(backend, top_k=0, top_p=1.0, **base)
    assert text(backend, top_k=2, top_p=1.0, **base) != wide
    assert text(backend, top_k=0, top_p=0.3, **base) != wide


def test_repetition_penalty_changes_output(backend: InferenceBackend) -> None:
    assert text(backend, temperature=0.0, repetition_penalty=1.5, max_tokens=48) != text(
        backend, temperature=0.0, max_tokens=48
    )


def test_presence_penalty_changes_output(backend: InferenceBackend) -> None:
    assert text(backend, temperature=0.0, presence_penalty=1.5, max_tokens=48) != text(
        backend, temperature=0.0, max_tokens=48
    )


def test_frequency_penalty_changes_output(backend: InferenceBackend) -> None:
    assert text(backend, temperature=0.0, frequency_penalty=1.5, max_tokens=48) != text(
        backend, temperature=0.0, max_tokens=48
    )


def test_penalties_reduce_repetition(backend: InferenceBackend) -> None:
    """The point of the penalties: fewer repeated tokens in the output."""
    plain = backend.tokenize(text(backend, temperature=0.0, max_tokens=64), add_special_tokens=False)
    penalised = backend.tokenize(
        text(backend, temperature=0.0, max_tokens=64, frequency_penalty=1.0, presence_penalty=1.0),
        add_special_tokens=False,
    )

    def repeats(ids: list[int]) -> int:
        return len(ids) - len(set(ids))

    assert repeats(plain) > 0, "greedy output of a base model should repeat itself over 64 tokens"
    assert repeats(penalised) < repeats(plain)
