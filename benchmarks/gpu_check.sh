#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a lent machine that has torch (CUDA), numpy, scipy, numba,
# onnx, onnxruntime, einops, pyyaml and tqdm, but no Ray, no registry and nothing of ours.
#
#   bash benchmarks/gpu_check.sh prepare   # HERE: the wheels it lacks and the 3-minute piece into .gpu/
#   bash benchmarks/gpu_check.sh run       # THERE, from the repo root: install the wheels, run the check
#
# After `prepare`, the device tool's call (it prints it too):
#   run(command="bash benchmarks/gpu_check.sh run", carry=[".gpu"], timeout_s=540)
# `run` ends within 8 minutes (GPU_CHECK_LIMIT_S for the check itself, the install before it) and leaves
# gpu_check.{md,json,log} in $OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
GPU_DIR=.gpu
# The target's Python; GPU_CHECK_PYTHON=3.11 downloads the twins to emulate the target here.
TARGET_PYTHON=${GPU_CHECK_PYTHON:-3.12}
LIMIT_S=${GPU_CHECK_LIMIT_S:-450}
MAX_MIB=50

# What the target lacks, pinned to the versions the project's venv runs (numpy-2 builds where binary).
# Not here because the target has them: torch, numpy, scipy, numba, llvmlite, onnx, onnxruntime,
# einops, pyyaml, tqdm, packaging. Left out on purpose: scikit-learn (librosa imports it only for
# functions we do not call), requests (pooch imports it lazily), setuptools (resampy 0.4.3 needs no
# pkg_resources, unlike 0.4.2).
WHEELS=(
    demucs==4.1.0 julius==0.2.8 lameenc==1.9.0
    pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5
    typing_extensions==4.16.0
    basic-pitch==0.4.0 resampy==0.4.3 mir_eval==0.8.2
    pretty_midi==0.2.11.post0 mido==1.3.3 six==1.17.0 importlib_resources==7.1.0
    librosa==0.11.0 audioread==3.1.0 lazy_loader==0.6 joblib==1.6.0 cloudpickle==3.1.3 decorator==5.3.1
    msgpack==1.2.4 pooch==1.9.0 platformdirs==4.14.9 soxr==1.1.0
    soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
)

prepare() {
    local python=${PYTHON:-.venv/bin/python}
    mkdir -p "$GPU_DIR"
    # .gpu/ travels with the device tool's `carry`, never with git.
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$GPU_DIR/" "$exclude" 2>/dev/null || echo "/$GPU_DIR/" >>"$exclude"

    echo "== wheels for CPython $TARGET_PYTHON (manylinux x86_64)"
    local fresh
    fresh=$(mktemp -d)
    # pip's extra local indexes here warn about projects they lack; only the real errors matter.
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$fresh" "${WHEELS[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    if [ "$(find "$fresh" -name '*.whl' | wc -l)" -ne "${#WHEELS[@]}" ]; then
        echo "expected ${#WHEELS[@]} wheels, got: $(ls "$fresh")" >&2
        exit 1
    fi
    rm -f "$GPU_DIR"/*.whl  # exactly one version of each: only this list
    mv "$fresh"/*.whl "$GPU_DIR"/
    rmdir "$fresh"

    if [ ! -s "$GPU_DIR/piece.flac" ]; then
        echo "== rendering the 3-minute piece (FluidSynth, FluidR3 GM)"
        PYTHONPATH=$PWD "$python" - "$GPU_DIR/piece.flac" <<'EOF'
import sys
import tempfile
from pathlib import Path

import soundfile

from tests.music import ensemble, render

with tempfile.TemporaryDirectory() as tmp:
    wav = render(ensemble(180.0), Path(tmp) / "piece.wav")
    samples, rate = soundfile.read(str(wav), dtype="int16", always_2d=True)
samples = samples[: 180 * rate]  # FluidSynth renders the last notes' release past the end
# FLAC is lossless for FluidSynth's 16-bit output and half the WAV's size.
soundfile.write(sys.argv[1], samples, rate, format="FLAC", subtype="PCM_16")
print(f"{sys.argv[1]}: {samples.shape[0] / rate:.1f} s, {samples.shape[1]} channels, {rate} Hz")
EOF
    fi

    echo "== $GPU_DIR"
    ls -l "$GPU_DIR"
    local kib
    kib=$(du -sk "$GPU_DIR" | cut -f1)
    echo "total: $((kib / 1024)) MiB (the device tool carries 64 MiB with the repo)"
    if [ "$kib" -gt $((MAX_MIB * 1024)) ]; then
        echo "$GPU_DIR is over $MAX_MIB MiB" >&2
        exit 1
    fi
    cat <<EOF

Now the device tool:
  run(command="bash benchmarks/gpu_check.sh run", carry=[".gpu"], timeout_s=540)
EOF
}

run() {
    local out=${OUT:-/tmp/gpu_check}
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    {
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
        fi
        echo "== installing $(ls "$GPU_DIR"/*.whl | wc -l) wheels into /tmp/site"
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU_DIR"/*.whl
        export PYTHONPATH=/tmp/site:$PWD
        echo "== benchmarks/gpu_check.py (at most $LIMIT_S s)"
        timeout -k 15 "$LIMIT_S" python3 benchmarks/gpu_check.py --piece "$GPU_DIR/piece.flac" --out "$out" "$@"
    } 2>&1 | tee "$out/gpu_check.log"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run [gpu_check.py options]" >&2; exit 2 ;;
esac
