"""The fault battery: hostile model files and abusive requests, run in a child process
(tests/fault_runner.py) so that a crash is a failed case, not the end of the test run.

Every case must end with a ``PcaiError`` subclass (or, for a harmless flipped byte, a clean
load), never a crash or a hang.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFReader

RUNNER = Path(__file__).with_name("fault_runner.py")


def run_cases(cases: list[dict[str, Any]], tmp_path: Path, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Runs the cases in one child process; returns each case's report by name."""
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PCAI_LOG"}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(spec)], capture_output=True, text=True, timeout=timeout, env=env
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line["name"] for line in lines if line["outcome"] == "started"]
    done = {line["name"]: line for line in lines if line["outcome"] in ("ok", "error")}
    crashed = [name for name in started if name not in done]
    assert not crashed and lines and lines[-1]["outcome"] == "finished", (
        f"the child process died (exit {proc.returncode}) during case {crashed[:1]}: {proc.stderr[-2000:]}"
    )
    return done


@pytest.fixture(scope="module")
def header(model_path: Path) -> dict[str, Any]:
    """Where things are in the real model's header."""
    reader = GGUFReader(model_path)
    first_tensor = reader.tensors[0].field.offset
    return {
        "data_offset": reader.data_offset,
        "tokens_field": reader.fields["tokenizer.ggml.tokens"].offset,
        "first_tensor_info": first_tensor,
        "first_tensor_name_len": len(reader.tensors[0].name),
        "size": model_path.stat().st_size,
    }


def write_variant(model_path: Path, out: Path, cut: int | None = None, patches: dict[int, bytes] | None = None) -> str:
    """A copy of the model's header (sparse after it: the pre-flight check only reads sizes
    there), cut at ``cut`` bytes and with bytes replaced at the given offsets."""
    size = model_path.stat().st_size
    keep = size if cut is None else cut
    with open(model_path, "rb") as src:
        head = bytearray(src.read(min(keep, 7 << 20)))
    for offset, data in (patches or {}).items():
        head[offset : offset + len(data)] = data
    with open(out, "wb") as dst:
        dst.write(head)
        dst.truncate(keep)
    return str(out)


def assert_clean_errors(reports: dict[str, dict[str, Any]], allowed_ok: bool = False, limit_s: float = 5.0) -> None:
    for name, r in reports.items():
        if r["outcome"] == "ok":
            assert allowed_ok, f"{name}: loaded, expected an error"
            continue
        assert r["pcai"], f"{name}: {r['type']} is not a PcaiError: {r['message']}"
        assert r["seconds"] < limit_s, f"{name}: took {r['seconds']} s to fail"
        assert r["message"], f"{name}: empty message"


def test_truncated_files_at_many_cut_points(model_path: Path, header: dict[str, Any], tmp_path: Path) -> None:
    h, size = header["data_offset"], header["size"]
    cuts = sorted(
        {0, 1, 3, 4, 7, 8, 15, 16, 23, 24, 25, 40, 100, 500, 933, 934, 935, 10_000, 100_000, 1 << 20}
        | {int(h * f) for f in (0.25, 0.5, 0.75, 0.99)}
        | {header["first_tensor_info"], header["first_tensor_info"] + 8, h - 1, h, h + 1}
        | {int(h + (size - h) * f) for f in (0.1, 0.5, 0.9)}
        | {size - 1}
    )
    cases = [
        {"name": f"cut at {c}", "kind": "load", "path": write_variant(model_path, tmp_path / f"cut{c}.gguf", cut=c)}
        for c in cuts
    ]
    reports = run_cases(cases, tmp_path)
    assert len(reports) == len(cuts) >= 30
    assert_clean_errors(reports)
    assert all(r["type"] == "ModelFormatError" for r in reports.values()), reports


def test_flipped_bytes_in_the_metadata(model_path: Path, header: dict[str, Any], tmp_path: Path) -> None:
    """A flipped byte in the metadata before the vocabulary: counts, key lengths, value types,
    hyperparameters. Each is an error, or a model that still loads; never a crash."""
    rng = random.Random(7)
    positions = sorted(rng.sample(range(4, header["tokens_field"]), 24))
    with open(model_path, "rb") as f:
        head = f.read(header["tokens_field"])
    cases = [
        {
            "name": f"flip at {p}",
            "kind": "load",
            "path": write_variant(model_path, tmp_path / f"flip{p}.gguf", patches={p: bytes([head[p] ^ 0xFF])}),
            "kwargs": {"max_context": 64},
        }
        for p in positions
    ]
    reports = run_cases(cases, tmp_path, timeout=900)
    assert len(reports) == len(positions)
    assert_clean_errors(reports, allowed_ok=True, limit_s=60.0)
    print({name: r["outcome"] for name, r in reports.items()})


def test_absurd_counts_and_shapes(model_path: Path, header: dict[str, Any], tmp_path: Path) -> None:
    t = header["first_tensor_info"] + 8 + header["first_tensor_name_len"]  # n_dims of the first tensor
    u64 = lambda v: struct.pack("<Q", v)  # noqa: E731
    u32 = lambda v: struct.pack("<I", v)  # noqa: E731
    variants = {
        "tensor count 2^63": ({8: u64(1 << 63)}, "more than the file holds"),
        "metadata count 2^40": ({16: u64(1 << 40)}, "more than the file holds"),
        "first key length 2^60": ({24: u64(1 << 60)}, ""),
        "version 99": ({4: u32(99)}, "unsupported GGUF version 99"),
        "5 dimensions": ({t: u32(5)}, "5 dimensions"),
        "zero dimension": ({t + 4: u64(0)}, "zero or overflowing shape"),
        "overflowing shape": ({t + 4: u64(1 << 62)}, "zero or overflowing shape|more than|overflowing"),
        "unknown ggml type": ({t + 4 + 8: u32(200)}, "unknown ggml type 200"),
        "misaligned offset": ({t + 4 + 8 + 4: u64(3)}, "not aligned"),
        "offset past the end": ({t + 4 + 8 + 4: u64(1 << 40)}, "truncated"),
    }
    cases = [
        {"name": name, "kind": "load", "path": write_variant(model_path, tmp_path / f"v{i}.gguf", patches=patch)}
        for i, (name, (patch, _)) in enumerate(variants.items())
    ]
    reports = run_cases(cases, tmp_path)
    assert_clean_errors(reports, limit_s=1.0)
    for name, (_, needle) in variants.items():
        assert reports[name]["type"] == "ModelFormatError", reports[name]
        for alternative in needle.split("|") if needle else []:
            if alternative in reports[name]["message"]:
                break
        else:
            assert not needle, f"{name}: {reports[name]['message']}"


def test_paths_that_are_not_model_files(model_path: Path, tmp_path: Path) -> None:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "broken.gguf").symlink_to(tmp_path / "nowhere.gguf")
    odd = os.fsdecode(b"mod\xffel.gguf")  # not UTF-8 on disk
    (tmp_path / odd).symlink_to(model_path)
    cases = [
        {"name": "directory", "kind": "load", "path": str(tmp_path / "empty-dir")},
        {"name": "missing", "kind": "load", "path": str(tmp_path / "missing.gguf")},
        {"name": "broken symlink", "kind": "load", "path": str(tmp_path / "broken.gguf")},
        {"name": "dev null", "kind": "load", "path": "/dev/null"},
    ]
    reports = run_cases(cases, tmp_path)
    assert_clean_errors(reports)
    assert reports["missing"]["type"] == reports["broken symlink"]["type"] == "ModelNotFoundError"
    assert reports["directory"]["type"] == "ModelFormatError"
    # A non-UTF-8 file name works like any other (checked here, in this process).
    from pcai_inference import BackendType

    with BackendType.MISTRALRS.create(device="cpu") as b:
        b.load_model(tmp_path / odd, max_context=64)
        assert b.generate("Hi", max_tokens=2, temperature=0.0).tokens_generated == 2


def test_abusive_requests(model_path: Path, tmp_path: Path) -> None:
    long_prompt = "word " * 400  # past a 256-token window
    requests: dict[str, tuple[dict[str, Any], str]] = {
        "max_tokens negative": ({"prompt": "Hi", "max_tokens": -1}, "InvalidRequestError"),
        "max_tokens huge": ({"prompt": "Hi", "max_tokens": 10**12, "stop": ["."]}, "ok-or-error"),
        "max_tokens float": ({"prompt": "Hi", "max_tokens": 1.5}, "InvalidRequestError"),
        "temperature NaN": ({"prompt": "Hi", "temperature": "nan"}, "InvalidRequestError"),
        "temperature inf": ({"prompt": "Hi", "temperature": "inf"}, "InvalidRequestError"),
        "top_p -1": ({"prompt": "Hi", "top_p": -1.0}, "InvalidRequestError"),
        "top_k string": ({"prompt": "Hi", "top_k": "40"}, "InvalidRequestError"),
        "seed huge": ({"prompt": "Hi", "seed": 10**40, "max_tokens": 2}, "ok"),
        "seed negative": ({"prompt": "Hi", "seed": -5, "max_tokens": 2}, "ok"),
        "5000 stop strings": ({"prompt": "Hi", "stop": [f"s{i}" for i in range(5000)]}, "InvalidRequestError"),
        "1 MB stop string": ({"prompt": "Hi", "stop": ["x" * (1 << 20)]}, "InvalidRequestError"),
        "empty stop string": ({"prompt": "Hi", "stop": [""], "max_tokens": 2}, "ok-or-error"),
        "prompt past the window": ({"prompt": long_prompt}, "InvalidRequestError"),
        "repetition penalty NaN": ({"prompt": "Hi", "repetition_penalty": "nan"}, "InvalidRequestError"),
        "logit bias NaN": ({"prompt": "Hi", "logit_bias": {"1": "nan"}}, "InvalidRequestError"),
        "unknown keyword": ({"prompt": "Hi", "n_gpu_layers": 3}, "InvalidRequestError"),
        "unknown chat role": (
            {"messages": [{"role": "wizard", "content": "Hi"}], "max_tokens": 2},
            "ok-or-error",
        ),
        "chat without template": ({"messages": [{"role": "user", "content": "Hi"}]}, "InvalidRequestError"),
        "null byte prompt": ({"prompt": "a\x00b", "max_tokens": 2}, "ok"),
        "lone surrogate prompt": ({"prompt": "a\ud800b", "max_tokens": 2}, "InvalidRequestError"),
        "lone surrogate stop": ({"prompt": "Hi", "stop": ["\udfff"]}, "InvalidRequestError"),
        "lone surrogate message": ({"messages": [{"role": "user", "content": "\ud800"}]}, "InvalidRequestError"),
    }
    cases = []
    for name, (request, _) in requests.items():
        request = dict(request)
        floats = [k for k, v in request.items() if v in ("nan", "inf")]
        if "logit_bias" in request:
            request["logit_bias"] = {1: float("nan")}
        cases.append(
            {"name": name, "kind": "generate", "model": str(model_path), "request": request, "decode_floats": floats}
        )
    # JSON cannot carry NaN keys as ints; the runner gets the dict as written above.
    reports = run_cases(json.loads(json.dumps(cases, allow_nan=True)), tmp_path)
    for name, (_, expected) in requests.items():
        r = reports[name]
        if expected == "ok":
            assert r["outcome"] == "ok", r
        elif expected == "ok-or-error":
            assert r["outcome"] == "ok" or r["pcai"], r
        else:
            assert r["outcome"] == "error" and r["type"] == expected, (name, r)
        assert r["seconds"] < 30, r


def test_chat_template_abuse_is_rejected_quickly(model_path: Path, tmp_path: Path) -> None:
    """Templates that loop for ever, recurse, or reach for Python objects: the template engine
    is minijinja, in Rust, with no Python objects in reach and bounded loops and recursion."""
    templates = {
        "huge loop": "{% for i in range(1000000000) %}x{% endfor %}",
        "nested loops": "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        "huge string": "{{ 'x' * 1000000000 }}{{ 'y' * 1000000000000 }}",
        "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "python objects": "{{ messages.__class__.__mro__[1].__subclasses__() }}{{ ''.__class__ }}",
        "import": "{% import 'os' as os %}{{ os.system('echo pwned') }}",
    }
    cases = [
        {
            "name": name,
            "kind": "generate",
            "model": str(model_path),
            "chat_template": template,
            "request": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        }
        for name, template in templates.items()
    ]
    reports = run_cases(cases, tmp_path)
    for name, r in reports.items():
        assert r["outcome"] == "ok" or r["pcai"], (name, r)
        # The load takes a few seconds; rendering itself must not add more than one.
        assert r["seconds"] < 15, (name, r)
    assert "pwned" not in json.dumps(reports)
