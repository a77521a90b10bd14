#!/usr/bin/env bash
# Side-by-side generation benchmark: transformers vs baton on the same random checkpoint with
# musicgen-small's exact shapes, 10 s of audio, CFG 3, top-k 250 sampling, CPU, f32.
#
#   tests/reference/bench_generate.sh DIR [SECONDS] [BATON_DTYPE] [THREADS]
#
# THREADS (default: all cores) is given to both: torch.set_num_threads and RAYON_NUM_THREADS.
# On a loaded machine prefer THREADS=1: torch's OpenMP threads collapse under oversubscription.
# DIR is built first if missing (tests/reference/bench_small_shaped.py build DIR, ~2.4 GB).
# Needs a release build of baton (cargo build --release; BATON=path overrides) and the pinned
# Python environment (PYTHON=path overrides). Peak RSS of baton comes from /usr/bin/time -v.
set -euo pipefail
DIR=${1:?usage: bench_generate.sh DIR [SECONDS] [BATON_DTYPE]}
SECS=${2:-10}
DTYPE=${3:-f32}
THREADS=${4:-0}
PY=${PYTHON:-$(tests/reference/setup.sh)}
BATON=${BATON:-${CARGO_TARGET_DIR:-target}/release/baton}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -f "$DIR/model.safetensors" ] || "$PY" "$HERE/bench_small_shaped.py" build "$DIR"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo "weights: $(du -m "$DIR/model.safetensors" | cut -f1) MiB on disk (f32)"
echo "== transformers"
"$PY" "$HERE/bench_small_shaped.py" time "$DIR" --seconds "$SECS" --threads "$THREADS" 2>/dev/null
echo "== baton ($DTYPE decoder weights)"
if [ "$THREADS" != 0 ]; then export RAYON_NUM_THREADS=$THREADS; fi
/usr/bin/time -v "$BATON" render --model "$DIR" --dtype "$DTYPE" \
    --prompt "80s pop track with bassy drums and synth" --seconds "$SECS" --cfg 3 --top-k 250 \
    --seed 0 --out "$OUT/bench.wav" 2> "$OUT/log" || { cat "$OUT/log"; exit 1; }
grep -E "^generated" "$OUT/log"
grep -E "Maximum resident set size|Elapsed \(wall" "$OUT/log" | sed 's/^\s*//'
