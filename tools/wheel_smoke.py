"""Smoke test of an installed pcai-inference (run by tools/cpu_wheel.sh in a fresh environment):
the package comes from site-packages, the default model loads, generates, streams, and the
`pcai-inference` command's `info` and `generate` work."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path


def main() -> None:
    import pcai_inference
    from pcai_inference import BackendType, GenerateRequest, default_model_path

    where = Path(pcai_inference.__file__).resolve()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert site in where.parents, f"pcai_inference comes from {where}, not from {site}"
    print(f"pcai_inference {pcai_inference.__version__} from {where.parent}")

    with BackendType.MISTRALRS.create(device="cpu") as backend:
        backend.load_model(default_model_path())
        request = GenerateRequest(prompt="The history of the Roman Empire began", max_tokens=16, temperature=0.0)
        whole = backend.generate(request)
        streamed = "".join(chunk.text for chunk in backend.generate_stream(request))
        assert whole.tokens_generated == 16 and whole.text, whole
        assert streamed == whole.text, (streamed, whole.text)
        print(f"generate and stream: {whole.text!r} ({whole.timings.decode_tokens_per_second:.0f} tok/s)")

    command = Path(sys.executable).with_name("pcai-inference")
    info = json.loads(subprocess.run([command, "info"], check=True, capture_output=True, text=True).stdout)
    assert info["engine_patches"], info
    print(f"`pcai-inference info`: {sorted(info)}")
    out = subprocess.run(
        [command, "generate", "The history of the Roman Empire began", "--max-tokens", "16"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == whole.text.strip(), (out, whole.text)
    print("`pcai-inference generate`: the same text")


if __name__ == "__main__":
    main()
