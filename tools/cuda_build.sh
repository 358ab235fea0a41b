#!/usr/bin/env bash
# Compiles the `cuda` feature with NVIDIA's CUDA 13.0 compiler and headers from PyPI: no system
# CUDA toolkit and no GPU needed. The `nvidia-cuda-nvcc` 13.x wheels hold the whole compiler
# (nvcc, cudafe++, fatbinary, nvlink, ptxas), `nvidia-nvvm` its cicc, `nvidia-cuda-crt` and
# `nvidia-cuda-cccl` its headers; the runtime, cuBLAS, cuRAND and NVRTC wheels hold the headers
# and the libraries the engine links. cudarc 0.19 (the engine's) knows CUDA 13.0 to 13.4.
#
#   bash tools/cuda_build.sh check    # cargo check --features cuda (kernels still compile: build scripts run)
#   bash tools/cuda_build.sh build    # cargo build --release --features cuda (default)
#   bash tools/cuda_build.sh wheel    # maturin build --release --features cuda --out dist-cuda
#
# Its own cargo target folder (CUDA_TARGET_DIR, default ~/.cache/pcai-inference/cuda-target) and
# toolkit venv (~/.cache/pcai-inference/cuda-13.0-toolkit). CUDA_COMPUTE_CAP (default 80: Ampere
# and newer) is the GPU generation the kernels are compiled for. 75 (Turing) does not compile:
# mistralrs-quant 0.8.1's AFQ kernels instantiate bfloat16 code whose helper exists only for
# sm_80 and newer (kernels/afq/afq_utils.cuh); CUDA 13 itself has dropped GPUs before Turing.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-build}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pcai-inference"
toolkit="$cache/cuda-13.0-toolkit"
links="$cache/cuda-13.0-link"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$cache/cuda-target}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"

# The compiler and libraries, pinned to one CUDA release (13.0 update 2).
packages=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
if [ ! -x "$toolkit/bin/python" ]; then
    python3 -m venv "$toolkit"
fi
"$toolkit/bin/python" -m pip install -q "${packages[@]}"
root="$("$toolkit/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
test -x "$root/bin/nvcc" || { echo "error: no nvcc in $root/bin" >&2; exit 1; }

# The wheels ship versioned libraries only (libcublas.so.13); the linker looks for libcublas.so.
# The driver library (libcuda.so.1) comes with the NVIDIA driver on the machine that runs the
# code: here an empty stub with its soname stands in for it, for linking only.
mkdir -p "$links"
for lib in "$root"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    ln -sf "$lib" "$links/${base%%.so.*}.so"
done
if [ ! -f "$links/libcuda.so" ]; then
    printf '' | cc -shared -x c - -o "$links/libcuda.so" -Wl,-soname,libcuda.so.1
fi

export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export PATH="$root/bin:$PATH"
export LIBRARY_PATH="$links:$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CPATH="$root/include${CPATH:+:$CPATH}"
# At run time the libraries come from the same PyPI packages installed beside the wheel
# (`pip install "pcai-inference[cuda]"`), found through this rpath, or from a system CUDA 13.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-cpu=x86-64-v3 -C link-arg=-Wl,-rpath,\$ORIGIN/../nvidia/cu13/lib"
nvcc --version | tail -n 2

python3 engine/prepare_engine.py >/dev/null
# The library is linked against the driver whether or not the stub supplies a symbol (it supplies
# none): libcuda.so.1 must be a dependency of the library, not left to chance at import.
link_args=(-C "link-arg=-Wl,--push-state,--no-as-needed,-lcuda,--pop-state")
started=$(date +%s)
case "$mode" in
    check) cargo check --release --features cuda ;;
    build) cargo rustc --release --features cuda --lib -- "${link_args[@]}" ;;
    wheel)
        maturin build --release --features cuda --out dist-cuda --compatibility off -- "${link_args[@]}"
        ls -l dist-cuda/
        ;;
    *) echo "usage: $0 [check|build|wheel]" >&2; exit 2 ;;
esac
echo "cuda $mode: $(($(date +%s) - started)) s"
