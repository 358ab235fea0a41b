"""The default model on a CUDA GPU: the correctness rule against exact arithmetic, batching,
streaming, memory freed by unload, and the speed (printed). `pytest -m gpu`; every test here is
skipped, with the reason, on a build without the `cuda` feature or a machine without a GPU
(tools/gpu_check.sh builds the CUDA wheel and runs these on a GPU machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from pcai_inference import BackendType, DeviceError, GenerateRequest, InferenceBackend, _core

from conftest import PROMPTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gemma3_exact_greedy import ExactGemma3
from test_teacher_forced_greedy import CASES, TOLERANCE, greedy_gaps
from test_teacher_forced_greedy import exact as exact  # the fixture, shared


def _why_no_gpu() -> Optional[str]:
    if "cuda" not in _core.build_features():
        return "this build has no CUDA support (the CPU wheel); build with tools/cuda_build.sh"
    try:
        _core.resolve_device_name("cuda:0")
    except DeviceError as e:
        return f"no CUDA GPU answers: {e}"
    return None


WHY = _why_no_gpu()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


@pytest.fixture(scope="module")
def gpu(model_path: Path) -> Iterator[InferenceBackend]:
    b = BackendType.MISTRALRS.create(device="cuda:0")
    b.load_model(model_path)
    assert b.device == "cuda:0"
    yield b
    b.unload()


def gpu_memory_used_mib() -> Optional[float]:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[0])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_greedy_choices_are_within_half_a_logit_of_the_exact_best(
    gpu: InferenceBackend, exact: ExactGemma3, case: dict[str, Any]
) -> None:
    _, gaps = greedy_gaps(gpu, exact, case)
    assert max(gaps) <= TOLERANCE, (case["id"], max(gaps))


def test_batched_equals_alone_and_streaming_equals_blocking(gpu: InferenceBackend) -> None:
    def greedy(prompt: str) -> GenerateRequest:
        return GenerateRequest(prompt=prompt, max_tokens=24, temperature=0.0)

    alone = [gpu.generate(greedy(p)).token_ids for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = [r.token_ids for r in pool.map(lambda p: gpu.generate(greedy(p)), PROMPTS)]
    assert together == alone
    streamed = "".join(c.text for c in gpu.generate_stream(greedy(PROMPTS[0])))
    assert streamed == gpu.generate(greedy(PROMPTS[0])).text


def test_speed_is_reported(gpu: InferenceBackend) -> None:
    long_prompt = " ".join(PROMPTS) * 8
    r = gpu.generate(GenerateRequest(prompt=long_prompt, max_tokens=128, temperature=0.0))
    print(
        f"\ncuda:0 prefill {r.timings.prompt_tokens_per_second:.0f} tok/s ({r.prompt_tokens} tokens), "
        f"decode {r.timings.decode_tokens_per_second:.0f} tok/s ({r.tokens_generated} tokens)"
    )
    assert r.tokens_generated > 0


def test_unload_frees_gpu_memory(model_path: Path) -> None:
    before = gpu_memory_used_mib()
    if before is None:
        pytest.skip("nvidia-smi is not on PATH")
    b = BackendType.MISTRALRS.create(device="cuda:0")
    b.load_model(model_path)
    b.generate("Hello", max_tokens=4)
    loaded = gpu_memory_used_mib()
    b.unload()
    after = gpu_memory_used_mib()
    assert loaded is not None and after is not None
    print(f"\nGPU memory: {before:.0f} MiB before, {loaded:.0f} loaded, {after:.0f} after unload")
    assert loaded > before
    assert after - before < 0.1 * (loaded - before) + 64
