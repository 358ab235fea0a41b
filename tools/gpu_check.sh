#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: builds the CUDA wheel (tools/cuda_build.sh: the
# compiler from PyPI), installs it with its CUDA libraries and the test dependencies into a fresh
# virtual environment, and runs the GPU tests (`pytest -m gpu`: the correctness rule against exact
# arithmetic, batching, streaming, memory freed by unload, the speed printed).
#
#   bash tools/gpu_check.sh              # CUDA_COMPUTE_CAP defaults to the GPU's (nvidia-smi)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CUDA_COMPUTE_CAP:-}" ] && command -v nvidia-smi >/dev/null; then
    CUDA_COMPUTE_CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader --id=0 | tr -d '.')"
    export CUDA_COMPUTE_CAP
fi
bash tools/cuda_build.sh wheel
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
wheel="$(ls dist-cuda/pcai_inference-*.whl)"
"$venv/bin/python" -m pip install -q "$wheel[cuda,test]"
# The installed wheel, not the checkout's sources: run from the tests folder's parent copy.
"$venv/bin/python" -c 'import pcai_inference, json; print(json.dumps(pcai_inference.build_info(), indent=1))'
(cd tests && "$venv/bin/python" -m pytest -m gpu -ra -s -p no:cacheprovider --rootdir=.. -c ../pyproject.toml .)
