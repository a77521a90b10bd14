#!/usr/bin/env bash
# The engine against transformers, side by side in one run: random weights with musicgen-small's
# exact shapes (tests/reference/bench_small_shaped.py build DIR, made if missing), SECONDS of
# audio (default 4: 203 decoder steps), CFG 3, top-k 250, both sides on the same threads, rounds
# interleaved (transformers f32, baton f32, baton f32 with its weights read into memory instead
# of used in place from the file's map, transformers bf16, baton bf16, baton q8, baton q4, ...)
# so a change in the shared host's load hits both. Prints every round and, per side, the
# median decoder steps/s with the spread (min..max), and baton / transformers of the medians
# (baton's 8- and 4-bit weights against transformers' f32, the issue's yardstick for them, and
# against the 50 steps/s real time needs).
#
#   tests/reference/bench_engine.sh DIR [ROUNDS] [SECONDS] [THREADS]
#
# Needs a release build (cargo build --release; BATON=path overrides) and the pinned Python
# environment (tests/reference/setup.sh; PYTHON=path overrides). BATON_GEMV=generic|avx2|avx512
# pins baton's matrix-vector kernel (default: the fastest this CPU runs); BATON_BF16_DOT=0 makes
# its bf16 products widen to f32 where the CPU could multiply in bf16 (AVX-512 BF16);
# BATON_Q8_VNNI=1 makes its 8-bit products multiply bytes by VNNI (AVX-512 VNNI).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?usage: bench_engine.sh DIR [ROUNDS] [SECONDS] [THREADS]}
ROUNDS=${2:-3}
SECS=${3:-4}
THREADS=${4:-$(nproc)}
PY=${PYTHON:-$(tests/reference/setup.sh)}
BATON=${BATON:-${CARGO_TARGET_DIR:-target}/release/baton}
[ -f "$DIR/model.safetensors" ] || "$PY" tests/reference/bench_small_shaped.py build "$DIR"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export RAYON_NUM_THREADS=$THREADS

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads"
torch_side() { # DTYPE
    "$PY" tests/reference/bench_small_shaped.py time "$DIR" --seconds "$SECS" --threads "$THREADS" \
        --dtype "$1" 2>/dev/null | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["steps_per_s"])'
}
baton_side() { # DTYPE
    "$BATON" render --model "$DIR" --dtype "$1" --prompt "80s pop track with bassy drums and synth" \
        --seconds "$SECS" --cfg 3 --top-k 250 --seed 0 --out "$OUT/bench.wav" 2> "$OUT/log" \
        || { cat "$OUT/log" >&2; exit 1; }
    grep -E "^generated" "$OUT/log" | sed -E 's/.*\(([0-9.]+) steps\/s.*/\1/'
}
for r in $(seq 1 "$ROUNDS"); do
    for dt in f32 bf16; do
        tdt=$([ "$dt" = f32 ] && echo float32 || echo bfloat16)
        t=$(torch_side "$tdt")
        b=$(baton_side "$dt")
        echo "round $r $dt: transformers $t steps/s, baton $b steps/s"
        echo "$dt transformers $t" >> "$OUT/all"
        echo "$dt baton $b" >> "$OUT/all"
        if [ "$dt" = f32 ]; then
            # The same with the decoder's weights read into memory instead of used in place.
            c=$(BATON_MAP_WEIGHTS=0 baton_side f32)
            echo "round $r f32: baton, weights read into memory, $c steps/s"
            echo "f32read baton $c" >> "$OUT/all"
        fi
    done
    for dt in q8 q4; do
        q=$(baton_side $dt)
        echo "round $r $dt: baton $q steps/s"
        echo "$dt baton $q" >> "$OUT/all"
    done
done
"$PY" - "$OUT/all" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for dt in ("f32", "bf16"):
    med = {}
    for side in ("transformers", "baton"):
        v = [float(x) for d, s, x in rows if d == dt and s == side]
        med[side] = statistics.median(v)
        print(f"{dt} {side}: median {med[side]:.2f} steps/s ({min(v):.2f}..{max(v):.2f}, {len(v)} rounds)")
    print(f"{dt} baton / transformers: {med['baton'] / med['transformers']:.2f}x")
v = [float(x) for d, s, x in rows if d == "f32read"]
print(f"f32 baton, weights read into memory (BATON_MAP_WEIGHTS=0): median {statistics.median(v):.2f} "
      f"steps/s ({min(v):.2f}..{max(v):.2f})")
t32 = statistics.median([float(x) for d, s, x in rows if d == "f32" and s == "transformers"])
for dt in ("q8", "q4"):
    v = [float(x) for d, s, x in rows if d == dt]
    m = statistics.median(v)
    print(f"{dt} baton: median {m:.2f} steps/s ({min(v):.2f}..{max(v):.2f}), "
          f"{m / t32:.2f}x transformers f32, {m / 50:.2f}x the 50 steps/s of real time")
EOF
