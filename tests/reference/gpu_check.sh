#!/usr/bin/env bash
# One-shot GPU check for a CUDA build of baton (issue 6), run on a machine with an NVIDIA GPU,
# PyTorch and transformers, from the repository root:
#
#   BATON=path/to/cuda/baton OUT=results/ tests/reference/gpu_check.sh
#
# Build the binary elsewhere with `cargo build --release --features cuda` (needs nvcc; see
# README "GPU"). Steps, each bounded so partial results survive a short lease:
#   1. greedy CFG-3 codes of the tiny-a fixture on the GPU vs transformers' recorded codes;
#      the same with a steering vector (vs transformers' forward-hook reference), and captured
#      features of a few clips on the GPU vs the CPU;
#      and a REPL render that reuses an earlier render's steps vs a fresh render;
#   2. a random musicgen-small-shaped checkpoint (bench_small_shaped.py build);
#   3. transformers generate, 30 s, CFG 3, on the GPU (steps/s, real-time factor), f32 and bf16;
#   4. baton render, 30 s, CFG 3, f32 then bf16 decoder weights, on the GPU;
#   4b. four 30 s takes in one batch (f32), the throughput `baton sweep --batch 4` gets;
#   4c. streaming: `render --out -` against step 4's file, time to first audio, and `play`'s
#       buffer and underruns (f32 and bf16);
#   5. with Nsight Systems installed, kernel launches per step (100 f32 steps).
set -u
B=${BATON:-target/release/baton}
# A gzipped binary (build_cuda.sh writes one, small enough to carry) is unpacked first.
case "$B" in *.gz) gunzip -c "$B" > /tmp/baton-gpu && chmod +x /tmp/baton-gpu && B=/tmp/baton-gpu ;; esac
# DEVICE=cpu dry-runs the script (and checks its plumbing) on a machine without a GPU.
DEV=${DEVICE:-cuda}
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
# The CUDA libraries baton links against (cuBLAS, cuRAND, cudart) come with PyTorch's wheels.
NV=$("$PY" -c "import glob, nvidia; print(':'.join(glob.glob(list(nvidia.__path__)[0] + '/*/lib')))" 2>/dev/null)
export LD_LIBRARY_PATH=${NV}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
"$B" --version > "$OUT/version.txt" 2>&1

echo "== 1. tiny-a greedy parity on $DEV"
timeout 60 "$B" render --model tests/fixtures/tiny-a --device "$DEV" --greedy --cfg 3 \
    --prompt "a calm piano melody with soft strings" --prompt "loud drums" \
    --max-new-tokens 11 --out "$OUT/tiny/" --save-codes "$OUT/tiny/" > "$OUT/tiny.log" 2>&1
tail -3 "$OUT/tiny.log"
# codes_match LABEL FIXTURE KEY DIR: every prompt-N.safetensors in DIR against FIXTURE[KEY][N-1].
codes_match() {
"$PY" - "$@" <<'PYEOF'
import sys
from safetensors.numpy import load_file
label, fixture, key, folder = sys.argv[1:5]
ref = load_file(fixture)[key]
ok = True
for i in range(ref.shape[0]):
    got = load_file(f"{folder}/prompt-{i + 1}.safetensors")["codes"]
    same = got.shape == ref[i].shape and (got == ref[i]).all()
    ok &= bool(same)
    print(f"prompt {i + 1}: codes {'equal' if same else 'DIFFER'} to transformers' (shape {got.shape})")
print(f"{label}:", "PASS" if ok else "FAIL")
PYEOF
}
codes_match parity tests/fixtures/reference-a.safetensors gen.cfg3.codes "$OUT/tiny" 2>&1 | tee "$OUT/parity.txt"

echo "== 1b. steering on $DEV vs transformers' hooks"
STEER=$("$PY" -c "import json; from safetensors import safe_open; m = safe_open('tests/fixtures/steer-reference.safetensors', 'np').metadata(); print(m['eta0'], m['max_new_tokens'], *json.loads(m['prompts']), sep=chr(10))")
ETA=$(echo "$STEER" | sed -n 1p); STEPS=$(echo "$STEER" | sed -n 2p)
timeout 60 "$B" render --model tests/fixtures/tiny-a --device "$DEV" --greedy --cfg 3 \
    --prompt "$(echo "$STEER" | sed -n 3p)" --prompt "$(echo "$STEER" | sed -n 4p)" \
    --max-new-tokens "$STEPS" --steer "tests/fixtures/steer-direction.safetensors:$ETA" \
    --layer-weights exp --out "$OUT/steer/" --save-codes "$OUT/steer/" > "$OUT/steer.log" 2>&1
codes_match "steered parity" tests/fixtures/steer-reference.safetensors const.codes "$OUT/steer" 2>&1 \
    | tee "$OUT/steer-parity.txt"

echo "== 1c. captured features, $DEV vs cpu"
timeout 60 "$B" dataset notes --builtin-synth --instruments 0, --limit 4 --quiet --out "$OUT/clips" > /dev/null 2>&1
for dev in cpu "$DEV"; do
  timeout 60 "$B" features "$OUT/clips" --model tests/fixtures/tiny-a --device $dev --out "$OUT/feats-$dev.safetensors" > /dev/null 2>&1
done
"$PY" - "$OUT" "$DEV" <<'PYEOF' 2>&1 | tee "$OUT/capture-parity.txt"
import sys, numpy as np
from safetensors.numpy import load_file
a, b = (load_file(f"{sys.argv[1]}/feats-{d}.safetensors") for d in ("cpu", sys.argv[2]))
worst = max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-12)) for k in a if k.startswith("layer."))
print(f"capture: worst block differs by {worst:.2e} of its largest value:", "PASS" if worst < 1e-4 else "FAIL")
PYEOF

echo "== 1d. reusing earlier steps on $DEV (REPL: a late schedule change) vs a fresh render"
mkdir -p "$OUT/reuse" && cp tests/fixtures/steer-direction.safetensors "$OUT/reuse/dir.safetensors"
TINY=$PWD/tests/fixtures/tiny-a; BABS=$(readlink -f "$B")
piece() { echo "render(piece(\"lofi piano\", 0.4).seed(4).steer(direction(\"dir.safetensors\"), 4.0 * (rise(0.0, 0.4) + $1 * step(0.3))), \"$2\");"; }
{ piece 0.5 a.wav; piece 2.0 b.wav; } | (cd "$OUT/reuse" && timeout 60 "$BABS" repl --history none \
    --model "$TINY" --device "$DEV" > repl.log 2>&1)
piece 2.0 b.wav > "$OUT/reuse/fresh.rhai"
(cd "$OUT/reuse" && timeout 60 "$BABS" render fresh.rhai --out fresh --model "$TINY" --device "$DEV" > fresh.log 2>&1)
{ grep -h "reusing" "$OUT/reuse/repl.log"
  if cmp -s "$OUT/reuse/b.wav" "$OUT/reuse/fresh/b.wav"; then echo "reuse: PASS (audio identical to a fresh render)";
  else echo "reuse: DIFFERS from a fresh render (allowed up to rounding; see the files)"; fi; } | tee "$OUT/reuse.txt"

echo "== 2. build the small-shaped checkpoint"
SMALL=${SMALL:-/tmp/small-shaped}
[ -f "$SMALL/model.safetensors" ] || timeout ${BUILD_S:-80} "$PY" tests/reference/bench_small_shaped.py build "$SMALL" > "$OUT/build.log" 2>&1
tail -2 "$OUT/build.log" 2>/dev/null

for dt in float32 bfloat16; do
  echo "== 3. transformers $dt, 30 s, $DEV"
  timeout ${TF_S:-45} "$PY" tests/reference/bench_small_shaped.py time "$SMALL" --seconds 30 --device "$DEV" \
      --dtype $dt 2>&1 | tail -2 | tee "$OUT/transformers-$dt.txt"
done

for dt in f32 bf16; do
  echo "== 4. baton $dt, 30 s, $DEV"
  /usr/bin/time -v timeout ${BATON_S:-35} "$B" render --model "$SMALL" --device "$DEV" --dtype "$dt" \
      --prompt "80s pop track with bassy drums and synth" --seconds 30 --cfg 3 --top-k 250 \
      --seed 0 --out "$OUT/baton-$dt.wav" > "$OUT/baton-$dt.log" 2>&1
  grep -E "^generated|steps/s|Elapsed \(wall|Maximum resident" "$OUT/baton-$dt.log" | tee "$OUT/baton-$dt.txt"
done

echo "== 4b. baton f32, four takes in one batch (as baton sweep renders them), 30 s, $DEV"
P="80s pop track with bassy drums and synth"
/usr/bin/time -v timeout ${BATCH_S:-45} "$B" render --model "$SMALL" --device "$DEV" --dtype f32 \
    --prompt "$P" --prompt "$P" --prompt "$P" --prompt "$P" --seconds 30 --cfg 3 --top-k 250 \
    --seed 0 --out "$OUT/batch4/" > "$OUT/baton-batch4.log" 2>&1
grep -E "^generated|steps/s|Elapsed \(wall|Maximum resident" "$OUT/baton-batch4.log" | tee "$OUT/baton-batch4.txt"
echo "(steps/s counts batch steps: four takes per step)" | tee -a "$OUT/baton-batch4.txt"
# Take 1 of the batch is step 4's f32 render (same prompt, seed 0): equal on the CPU; on a GPU
# the batch's other matrix shapes may round differently.
if cmp -s "$OUT/batch4/prompt-1.wav" "$OUT/baton-f32.wav"; then r=equal; else r=differs; fi
echo "batched take 1 vs the lone f32 render: $r" | tee -a "$OUT/baton-batch4.txt"

echo "== 4c. streaming (issue 17): --out - and play, 30 s, f32 and bf16, $DEV"
# The stream must equal step 4's file render (same prompt and seed), and say how soon sound left
# and how fast generation runs against real time; play buffers to play through (a player that
# discards its input stands in for a sound card) and reports any underrun.
for dt in f32 bf16; do
  timeout ${STREAM_S:-45} "$B" render --model "$SMALL" --device "$DEV" --dtype $dt \
      --prompt "80s pop track with bassy drums and synth" --seconds 30 --cfg 3 --top-k 250 \
      --seed 0 --out - 2> "$OUT/stream-$dt.log" > "$OUT/stream-$dt.wav"
  "$PY" - "$OUT/stream-$dt.wav" "$OUT/baton-$dt.wav" <<'PYEOF' 2>&1 | tee "$OUT/stream-$dt.txt"
import sys, numpy as np
def samples(path):
    b = open(path, "rb").read(); i = b.index(b"data") + 8
    return np.frombuffer(b[i:i + (len(b) - i) // 4 * 4], dtype="<f4")
a, b = samples(sys.argv[1]), samples(sys.argv[2])
n = min(len(a), len(b))
print(f"stream {len(a)} samples vs file {len(b)}: max difference {np.abs(a[:n] - b[:n]).max() if n else float('nan'):.2e}")
PYEOF
  grep -E "made|first audio" "$OUT/stream-$dt.log" | tr '\r' '\n' | tail -1 | tee -a "$OUT/stream-$dt.txt"
  timeout ${STREAM_S:-45} "$B" play --model "$SMALL" --device "$DEV" --dtype $dt \
      --prompt "80s pop track with bassy drums and synth" --seconds 30 --player cat \
      > /dev/null 2> "$OUT/play-$dt.log"
  tr '\r' '\n' < "$OUT/play-$dt.log" | grep -E "playing|underrun|made" | tee "$OUT/play-$dt.txt"
done

# 5. Kernels per step, if Nsight Systems is there: 100 steps of the f32 render, to check the
# launch count the decode loop was designed to (about 550 per step with CFG and top-k).
if command -v nsys > /dev/null && [ "$DEV" != cpu ]; then
  echo "== 5. kernel launches per step (nsys, f32, 100 steps)"
  timeout ${NSYS_S:-90} nsys profile -o "$OUT/steps" --force-overwrite true -t cuda \
      "$B" render --model "$SMALL" --device "$DEV" --prompt "80s pop" --max-new-tokens 100 \
      --cfg 3 --top-k 250 --out "$OUT/nsys.wav" > "$OUT/nsys.log" 2>&1
  timeout 60 nsys stats -r cuda_gpu_kern_sum -f csv "$OUT/steps.nsys-rep" > "$OUT/kernels.csv" 2>/dev/null
  "$PY" - "$OUT/kernels.csv" <<'PYEOF' 2>&1 | tee "$OUT/kernels.txt"
import csv, sys
rows = [r for r in csv.DictReader(line for line in open(sys.argv[1]) if "," in line)]
total = sum(int(r["Instances"]) for r in rows)
print(f"{total} kernel launches in the run (text encoder and codec included): ~{total / 100:.0f} per step")
for r in sorted(rows, key=lambda r: -int(r["Instances"]))[:8]:
    print(f"  {r['Instances']:>7} {r['Name'][:70]}")
PYEOF
fi
