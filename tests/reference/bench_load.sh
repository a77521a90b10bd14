#!/usr/bin/env bash
# Model load against transformers, side by side in one run: the musicgen-small-shaped random
# checkpoint (tests/reference/bench_small_shaped.py build DIR, made if missing), a fresh process
# per side and round, rounds interleaved (transformers f32, baton f32 with its decoder weights
# used in place, baton f32 reading them into memory, transformers and baton bf16, baton q8,
# baton q4), the file in the page
# cache (one untimed read first). Prints every round and per side the median load seconds with
# the spread (min..max).
#
#   tests/reference/bench_load.sh DIR [ROUNDS] [THREADS]
#
# Needs `cargo build --release --example bench_load` (BENCH_LOAD=path overrides) and the pinned
# Python environment (tests/reference/setup.sh; PYTHON=path overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?usage: bench_load.sh DIR [ROUNDS] [THREADS]}
ROUNDS=${2:-3}
THREADS=${3:-$(nproc)}
PY=${PYTHON:-$(tests/reference/setup.sh)}
BENCH=${BENCH_LOAD:-${CARGO_TARGET_DIR:-target}/release/examples/bench_load}
[ -f "$DIR/model.safetensors" ] || "$PY" tests/reference/bench_small_shaped.py build "$DIR"
export RAYON_NUM_THREADS=$THREADS
cat "$DIR"/model.safetensors > /dev/null

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads"
field() { "$PY" -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
declare -A SEEN
sides=("transformers_f32" "baton_f32_mapped" "baton_f32_read" "transformers_bf16" "baton_bf16"
    "baton_q8" "baton_q4")
for r in $(seq 1 "$ROUNDS"); do
    line="round $r:"
    for side in "${sides[@]}"; do
        case $side in
            transformers_f32) out=$("$PY" tests/reference/bench_small_shaped.py load "$DIR" \
                --threads "$THREADS" 2>/dev/null) ;;
            baton_f32_mapped) out=$("$BENCH" "$DIR" f32) ;;
            baton_f32_read) out=$(BATON_MAP_WEIGHTS=0 "$BENCH" "$DIR" f32) ;;
            transformers_bf16) out=$("$PY" tests/reference/bench_small_shaped.py load "$DIR" \
                --threads "$THREADS" --dtype bfloat16 2>/dev/null) ;;
            baton_bf16) out=$("$BENCH" "$DIR" bf16) ;;
            baton_q8) out=$("$BENCH" "$DIR" q8) ;;
            baton_q4) out=$("$BENCH" "$DIR" q4) ;;
        esac
        s=$(echo "$out" | field load_s)
        SEEN[$side]="${SEEN[$side]:-} $s"
        line="$line $side $s s (rss $(echo "$out" | field peak_rss_mib) MiB)"
    done
    echo "$line"
done
for side in "${sides[@]}"; do
    echo "$side: $(echo "${SEEN[$side]}" | "$PY" -c '
import statistics, sys
v = [float(x) for x in sys.stdin.read().split()]
print(f"{statistics.median(v):.2f} s ({min(v):.2f}..{max(v):.2f})")')"
done
