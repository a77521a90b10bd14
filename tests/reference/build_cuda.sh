#!/usr/bin/env bash
# Builds `baton` with `--features cuda` on a machine without a GPU or a system CUDA toolkit,
# using NVIDIA's CUDA 13.0 wheels from PyPI (nvcc, headers, cuBLAS, cuRAND, NVRTC). The result
# runs on a GPU machine whose PyTorch wheels provide the same CUDA 13 libraries
# (tests/reference/gpu_check.sh sets LD_LIBRARY_PATH from them).
#
#   tests/reference/build_cuda.sh [OUT_BINARY]     (default target/cuda/baton, stripped, + .gz)
#
# CUDA_COMPUTE_CAP selects the GPU generation (90: H100/H200). candle links the CUDA driver
# library at build time; without a driver here, a stub libcuda.so exporting the driver symbols
# cudarc uses stands in for it (the real libcuda.so.1 is loaded on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_BIN=${1:-target/cuda/baton}
VENV=${CUDA_VENV:-target/cuda-venv}
LINK=target/cuda-link
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda-build}

[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
# cudarc 0.19 knows CUDA up to 13.4; pin one toolkit release so nvcc, nvvm and ptxas agree.
"$VENV/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.0.19 \
    nvidia-curand==10.4.5.25 nvidia-cuda-nvrtc==13.0.88
CU=$(cd "$VENV"/lib/python3*/site-packages/nvidia/cu13 && pwd)

mkdir -p "$LINK"
for l in cublas cublasLt cudart nvrtc; do ln -sf "$CU/lib/lib$l.so.13" "$LINK/lib$l.so"; done
ln -sf "$CU/lib/libcurand.so.10" "$LINK/libcurand.so"

export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# Same flags in both passes, so the second reuses the first's build.
export RUSTFLAGS="-L $(pwd)/$LINK"
# First pass compiles cudarc; its undefined driver symbols then name the stub's exports.
if [ ! -f "$LINK/libcuda.so" ]; then
    cargo build --release --features cuda --lib
    nm "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib 2>/dev/null \
        | awk '$1 == "U" && $2 ~ /^cu[A-Z]/ {print "void " $2 "(void) {}"}' | sort -u > "$LINK/stub.c"
    gcc -shared -fPIC -o "$LINK/libcuda.so" -Wl,-soname,libcuda.so.1 "$LINK/stub.c"
fi
cargo build --release --features cuda --bin baton
mkdir -p "$(dirname "$OUT_BIN")"
strip -o "$OUT_BIN" "$CARGO_TARGET_DIR/release/baton"
# The stripped binary is about 62 MiB (mostly candle's PTX), close to the device tool's 64 MiB
# carry limit; the gzip (about 17 MiB) is what to carry (gpu_check.sh unpacks BATON=*.gz).
gzip -9 -c "$OUT_BIN" > "$OUT_BIN.gz"
ls -l "$OUT_BIN" "$OUT_BIN.gz"
