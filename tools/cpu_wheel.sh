#!/usr/bin/env bash
# The CPU wheel, installed as a user would install it: builds the release wheel with maturin (or
# takes one built elsewhere), checks its tags (abi3; the manylinux policy it meets, by
# `auditwheel show`), installs it with the [demo] extra into a fresh virtual environment whose
# PATH holds no Rust toolchain, and runs tools/wheel_smoke.py there (load the default model,
# generate, stream, the CLI's `generate` and `info`).
#
#   bash tools/cpu_wheel.sh                 # build into dist/ (CARGO_TARGET_DIR is reused), then check
#   bash tools/cpu_wheel.sh dist/x.whl      # check a wheel built elsewhere (the wheel workflow)
#
# Used by .ci/run and by .github/workflows/wheels.yml. Needs python3 with venv; building needs
# maturin and a Rust toolchain, checking does not.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ $# -ge 1 ]; then
    wheel="$1"
else
    python3 engine/prepare_engine.py >/dev/null
    started=$(date +%s)
    rm -rf dist/pcai_inference-*.whl
    maturin build --release --out dist
    echo "build time: $(($(date +%s) - started)) s"
    wheel=$(ls dist/pcai_inference-*.whl)
fi
name=$(basename "$wheel")
echo "wheel: $name, $(du -k "$wheel" | cut -f1) KiB"

# Tags: one wheel for every CPython >= 3.10 (abi3), for a manylinux policy.
case "$name" in
    *-cp310-abi3-*) ;;
    *) echo "error: $name is not an abi3 wheel for CPython >= 3.10" >&2; exit 1 ;;
esac
case "$name" in
    *manylinux*) ;;
    *) echo "error: $name has no manylinux tag (built on a system too new, or not audited)" >&2; exit 1 ;;
esac
python3 -m venv "$work/audit"
"$work/audit/bin/python" -m pip install -q "auditwheel>=6"
"$work/audit/bin/auditwheel" show "$wheel"

# A fresh environment without Rust: what a user of the wheel has.
clean_path="/usr/local/bin:/usr/bin:/bin"
if env -i PATH="$clean_path" bash -c 'command -v cargo || command -v rustc' >/dev/null; then
    echo "error: a Rust toolchain is on $clean_path; the check would not show the wheel stands alone" >&2
    exit 1
fi
python3 -m venv "$work/user"
env -i HOME="$HOME" PATH="$work/user/bin:$clean_path" "$work/user/bin/python" -m pip install -q "$wheel[demo]"
(cd "$work" && env -i HOME="$HOME" PATH="$work/user/bin:$clean_path" "$work/user/bin/python" \
    "$OLDPWD/tools/wheel_smoke.py")
echo "the CPU wheel installs and runs without a Rust toolchain"
