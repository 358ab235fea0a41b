"""A GGUF file is read by the engine as it is: no dense F32 copy of the token embedding, nothing
written to disk (engine patch mistralrs-core 0013, candle-core 0005); the tokenizer is built on
its own thread while the engine reads the weights (mistralrs-core 0019)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from gguf import GGUFReader
from llama_gguf import VOCAB, write_llama

from pcai_inference import BackendType, ModelFormatError

from conftest import HIGH_WATER_KIB, run_python

# Loads the model in a fresh process and reports its memory high-water mark before and after,
# and the bytes it wrote through system calls while loading.
LOAD_AND_MEASURE = """
import json
from pcai_inference import BackendType

def written():
    for line in open("/proc/self/io"):
        if line.startswith("wchar:"):
            return int(line.split()[1])

before_kib = high_water_kib()
b = BackendType.MISTRALRS.create(device="cpu")
start = written()
b.load_model(MODEL)
wrote = written() - start
ids = b.generate("The capital of France is", max_tokens=4, temperature=0.0).token_ids
peak_kib = high_water_kib()
b.unload()
print(json.dumps({"before_kib": before_kib, "peak_kib": peak_kib, "wrote": wrote, "ids": list(ids)}))
"""


def measure(model_path: Path, env: dict[str, str] | None = None) -> dict[str, int]:
    code = f"MODEL = {str(model_path)!r}\n" + HIGH_WATER_KIB + LOAD_AND_MEASURE
    proc = run_python(code, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def test_loading_holds_no_dense_copy_of_the_embedding_table(model_path: Path) -> None:
    reader = GGUFReader(model_path)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    dense_table = int(embd.n_elements) * 4
    file_size = model_path.stat().st_size
    report = measure(model_path)
    grown = (report["peak_kib"] - report["before_kib"]) * 1024
    # The weights as read (Q5_0 widened to Q8_0 adds at most half the file), the tokenizer and the
    # runtime fit in twice the file; a dense F32 table (640 MiB here) would add more than half of
    # itself on top.
    bound = 2 * file_size + dense_table // 2
    print(f"load peak grew {grown / 2**20:.0f} MiB (bound {bound / 2**20:.0f}; dense table {dense_table / 2**20:.0f})")
    assert grown < bound


def test_loading_writes_nothing_to_disk(model_path: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cache = tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    env = {
        "HOME": str(home),
        "PCAI_CACHE_DIR": str(cache),
        "XDG_CACHE_HOME": str(cache),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    report = measure(model_path, env)
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    assert left == [], f"loading wrote {left}"
    # System-call writes while loading: the engine's wake-up counters and the like, not a file.
    assert report["wrote"] < 1 << 20, report
    assert len(report["ids"]) == 4


def _byte_level_vocabulary_with_a_broken_merge(w: gguf.GGUFWriter) -> None:
    """A byte-level vocabulary whose merge `a b` makes `ab`, which it lacks."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    alphabet = [chr(b) for b in printable] + [chr(0x100 + i) for i in range(256 - len(printable))]
    tokens = alphabet + [f"\u0120w{i}" for i in range(VOCAB - len(alphabet) - 1)] + ["<|end|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * (VOCAB - 1) + [3])
    w.add_token_merges(["a b"])
    w.add_eos_token_id(VOCAB - 1)
    w.add_add_bos_token(False)


def test_a_tokenizer_that_cannot_be_built_fails_the_load(tmp_path: Path, model_path: Path) -> None:
    path = tmp_path / "broken-merge.gguf"
    write_llama(path, vocabulary=_byte_level_vocabulary_with_a_broken_merge)
    b = BackendType.MISTRALRS.create(device="cpu")
    with pytest.raises(ModelFormatError, match="`ab` out of vocabulary"):
        b.load_model(path)
    # The same backend loads and runs a good file afterwards.
    b.load_model(model_path, max_context=512)
    assert len(b.generate("The capital of France is", max_tokens=3, temperature=0.0).token_ids) == 3
    b.unload()
