"""The token embedding of a GGUF model of another architecture (Llama) stays quantized: a file
written here with a Q8_0 embedding generates the ids of the same model stored with that
embedding in F32, and its load holds no dense F32 copy of the table (engine patch
mistralrs-core 0016)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from llama_gguf import HIDDEN, Q8_0, VOCAB, write_llama

from conftest import HIGH_WATER_KIB, run_python

PROMPTS = ["hello world", "the quick brown fox", "abc abc abc", "0123456789"]

GENERATE = """
import json
from pcai_inference import BackendType

before = high_water_kib()
b = BackendType.MISTRALRS.create(device="cpu")
b.load_model(MODEL)
ids = [list(b.generate(p, max_tokens=12, temperature=0.0).token_ids) for p in PROMPTS]
peak = high_water_kib()
b.unload()
print(json.dumps({"ids": ids, "grown_kib": peak - before}))
"""


def generate(path: Path) -> dict[str, object]:
    proc = run_python(f"MODEL = {str(path)!r}\nPROMPTS = {PROMPTS!r}\n" + HIGH_WATER_KIB + GENERATE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], dict[str, object]]:
    """Generations and load growth of the model with a Q8_0 embedding and with it in F32."""
    d = tmp_path_factory.mktemp("llama")
    quantized, dense = d / "q8_0_embedding.gguf", d / "f32_embedding.gguf"
    write_llama(quantized, Q8_0)
    write_llama(dense, gguf.GGMLQuantizationType.F32)
    return generate(quantized), generate(dense)


def test_a_quantized_embedding_generates_what_its_dense_values_generate(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    quantized, dense = reports
    assert quantized["ids"] == dense["ids"]
    assert all(len(ids) == 12 for ids in quantized["ids"])  # type: ignore[attr-defined]


def test_a_quantized_embedding_is_not_held_as_a_dense_table(
    reports: tuple[dict[str, object], dict[str, object]],
) -> None:
    quantized, dense = reports
    grown_q = int(quantized["grown_kib"]) * 1024  # type: ignore[call-overload]
    grown_d = int(dense["grown_kib"]) * 1024  # type: ignore[call-overload]
    dense_table = VOCAB * HIDDEN * 4
    # The same model, the same runtime: the file with an F32 table holds 128 MiB of it, the one
    # with a Q8_0 table about a quarter of that, unless the engine expands it to F32 as well.
    saved = grown_d - grown_q
    print(f"load grew {grown_q / 2**20:.0f} MiB (Q8_0 table) and {grown_d / 2**20:.0f} MiB (F32 table)")
    assert saved > dense_table // 2
