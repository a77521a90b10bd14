#!/usr/bin/env bash
# One-shot GPU check for a CUDA build of baton (issue 6), run on a machine with an NVIDIA GPU,
# PyTorch and transformers, from the repository root:
#
#   BATON=path/to/cuda/baton OUT=results/ tests/reference/gpu_check.sh
#
# Build the binary elsewhere with `cargo build --release --features cuda` (needs nvcc; see
# README "GPU"). Steps, each bounded so partial results survive a short lease:
#   1. greedy CFG-3 codes of the tiny-a fixture on the GPU vs transformers' recorded codes;
#   2. a random musicgen-small-shaped checkpoint (bench_small_shaped.py build);
#   3. transformers generate, 30 s, CFG 3, on the GPU (steps/s, real-time factor);
#   4. baton render, 30 s, CFG 3, f32 then bf16 decoder weights, on the GPU.
set -u
B=${BATON:-target/release/baton}
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
# The CUDA libraries baton links against (cuBLAS, cuRAND, cudart) come with PyTorch's wheels.
NV=$("$PY" -c "import glob, nvidia; print(':'.join(glob.glob(list(nvidia.__path__)[0] + '/*/lib')))" 2>/dev/null)
export LD_LIBRARY_PATH=${NV}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
"$B" --version > "$OUT/version.txt" 2>&1

echo "== 1. tiny-a greedy parity on cuda"
timeout 60 "$B" render --model tests/fixtures/tiny-a --device cuda --greedy --cfg 3 \
    --prompt "a calm piano melody with soft strings" --prompt "loud drums" \
    --max-new-tokens 11 --out "$OUT/tiny/" --save-codes "$OUT/tiny/" > "$OUT/tiny.log" 2>&1
tail -3 "$OUT/tiny.log"
"$PY" - "$OUT" <<'PYEOF' 2>&1 | tee "$OUT/parity.txt"
import sys
from safetensors.numpy import load_file
ref = load_file("tests/fixtures/reference-a.safetensors")["gen.cfg3.codes"]
ok = True
for i in range(ref.shape[0]):
    got = load_file(f"{sys.argv[1]}/tiny/prompt-{i + 1}.safetensors")["codes"]
    same = got.shape == ref[i].shape and (got == ref[i]).all()
    ok &= bool(same)
    print(f"prompt {i + 1}: codes {'equal' if same else 'DIFFER'} to transformers' (shape {got.shape})")
print("parity:", "PASS" if ok else "FAIL")
PYEOF

echo "== 2. build the small-shaped checkpoint"
SMALL=${SMALL:-/tmp/small-shaped}
[ -f "$SMALL/model.safetensors" ] || timeout ${BUILD_S:-80} "$PY" tests/reference/bench_small_shaped.py build "$SMALL" > "$OUT/build.log" 2>&1
tail -2 "$OUT/build.log" 2>/dev/null

echo "== 3. transformers, 30 s, cuda"
timeout ${TF_S:-45} "$PY" tests/reference/bench_small_shaped.py time "$SMALL" --seconds 30 --device cuda 2>&1 | tail -2 | tee "$OUT/transformers.txt"

for dt in f32 bf16; do
  echo "== 4. baton $dt, 30 s, cuda"
  /usr/bin/time -v timeout ${BATON_S:-35} "$B" render --model "$SMALL" --device cuda --dtype "$dt" \
      --prompt "80s pop track with bassy drums and synth" --seconds 30 --cfg 3 --top-k 250 \
      --seed 0 --out "$OUT/baton-$dt.wav" > "$OUT/baton-$dt.log" 2>&1
  grep -E "^generated|steps/s|Elapsed \(wall|Maximum resident" "$OUT/baton-$dt.log" | tee "$OUT/baton-$dt.txt"
done
