#!/usr/bin/env bash
# One-shot CPU-class check: every figure issues 15 (engine) and 21 (probe training) ask for on
# a machine class, side by side with the references in one run, written into OUT. Meant for the
# first session on a CPU class that has not been measured (the Intel Xeon with AVX-512 + AMX):
# start it in the background, go on with other work (no compiles meanwhile: they share the 2
# cores), read OUT/summary.txt at the end.
#
#   tests/reference/cpu_check.sh OUT [DIR] [STEPS]
#
# DIR: the musicgen-small-shaped random checkpoint (bench_small_shaped.py build DIR, made if
# missing; default /tmp/small). STEPS: which steps to run, comma-separated (default all, in this
# order, the issues' acceptance figures first):
#   engine    bench_engine.sh DIR 3 4 2 (transformers and baton f32, bf16; baton q8, q4)
#   rfm       bench_rfm.py, f32 both sides, 2 rounds: one probe d = 1,024 and 2,048, 2-block search
#   rfm2      the 2-block search on the other data draw (--dims "")
#   q8vnni    q8 renders alternating BATON_Q8_VNNI=0/1 (3 pairs)
#   gemv      bench_gemv BF16,Q8 from memory and cached, with BATON_Q8_VNNI=1, and BF16 with
#             BATON_BF16_DOT=0
#   load      bench_load.sh DIR 3 2
#   encodec   bench_encodec.sh DIR 3 10 2
#   rfm24     the 24-block search, f32 both sides, one round (about 15 min on the AMD EPYC)
# Each step has its own time limit and its own log (OUT/STEP.txt); one that fails or times out
# is noted in the summary and the next one runs.
set -u
cd "$(dirname "$0")/../.."
OUT=${1:?usage: cpu_check.sh OUT [DIR] [STEPS]}
DIR=${2:-/tmp/small}
STEPS=${3:-engine,rfm,rfm2,q8vnni,gemv,load,encodec,rfm24}
mkdir -p "$OUT"
PY=${PYTHON:-$(tests/reference/setup.sh)}
SUMMARY="$OUT/summary.txt"

{
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    lscpu | grep -E '^(Thread|Core|Socket|L2|L3)'
    echo "isa: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|amx_tile|amx_bf16)$' | tr '\n' ' ')"
    echo "baton: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$SUMMARY"
cat "$SUMMARY"

echo "building (release: baton and the bench examples)"
cargo build --release --quiet --bin baton --examples || { echo "build failed" | tee -a "$SUMMARY"; exit 1; }
[ -f "$DIR/model.safetensors" ] || "$PY" tests/reference/bench_small_shaped.py build "$DIR"
EX=${CARGO_TARGET_DIR:-target}/release/examples
BATON=${CARGO_TARGET_DIR:-target}/release/baton
export RAYON_NUM_THREADS=2

# step NAME LIMIT_S COMMAND...: runs COMMAND into OUT/NAME.txt under a time limit, then copies
# the lines that matter (medians, ratios, table rows) into the summary.
step() {
    local name=$1 limit=$2
    shift 2
    case ",$STEPS," in *",$name,"*) ;; *) return ;; esac
    echo "== $name ($(date -u +%H:%M), limit ${limit} s)" | tee -a "$SUMMARY"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    # The scripts' closing lines (medians, ratios; bench_rfm's table after "summary"), and
    # every kernel line of bench_gemv and every pair of q8_pairs.
    { grep -E 'GB/s|^pair|^-- ' "$OUT/$name.txt" | grep -v generic || sed -n '/^summary/,$p' "$OUT/$name.txt" | grep . \
        || grep -E 'median|x transformers|baton / |baton takes|: [0-9.]+ s \(' "$OUT/$name.txt"; } \
        | head -150 >> "$SUMMARY"
    echo "($name: exit $rc, $((SECONDS - start)) s, load average $(cut -d' ' -f1-3 /proc/loadavg))" \
        | tee -a "$SUMMARY"
}

# q8 renders of 4 s alternating the widening and the VNNI byte kernel.
q8_pairs() {
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    for r in 1 2 3; do
        for v in 0 1; do
            BATON_Q8_VNNI=$v "$BATON" render --model "$DIR" --dtype q8 --seconds 4 --cfg 3 \
                --top-k 250 --seed 0 --prompt "80s pop track with bassy drums and synth" \
                --out "$tmp/q8.wav" 2> "$tmp/log" || { cat "$tmp/log"; return 1; }
            echo "pair $r BATON_Q8_VNNI=$v: $(grep -E '^generated' "$tmp/log" | sed -E 's/.*\(([0-9.]+) steps\/s.*/\1/') steps/s"
        done
    done
}

gemv_all() {
    echo "-- from memory"
    BENCH_ONLY=BF16,Q8 "$EX/bench_gemv"
    echo "-- cached"
    BENCH_ONLY=BF16,Q8 BENCH_CACHED=1 "$EX/bench_gemv"
    echo "-- BATON_Q8_VNNI=1, from memory"
    BENCH_ONLY=Q8 BATON_Q8_VNNI=1 "$EX/bench_gemv"
    echo "-- BATON_Q8_VNNI=1, cached"
    BENCH_ONLY=Q8 BENCH_CACHED=1 BATON_Q8_VNNI=1 "$EX/bench_gemv"
    echo "-- BATON_BF16_DOT=0, from memory"
    BENCH_ONLY=BF16 BATON_BF16_DOT=0 "$EX/bench_gemv"
}

RFM_F32=(--xrfm-dtypes float32 --baton-precisions f32 --search-dtypes float32 --baton "$BATON")
step engine 1800 tests/reference/bench_engine.sh "$DIR" 3 4 2
step rfm 1200 "$PY" tests/reference/bench_rfm.py "${RFM_F32[@]}" --rounds 2
step rfm2 900 "$PY" tests/reference/bench_rfm.py "${RFM_F32[@]}" --rounds 2 --dims ""
# `timeout` runs programs, not shell functions: these two run in a child bash.
export -f q8_pairs gemv_all
export DIR BATON EX
step q8vnni 600 bash -c q8_pairs
step gemv 600 bash -c gemv_all
step load 600 env BENCH_LOAD="$EX/bench_load" tests/reference/bench_load.sh "$DIR" 3 2
step encodec 900 tests/reference/bench_encodec.sh "$DIR" 3 10 2
step rfm24 3600 "$PY" tests/reference/bench_rfm.py "${RFM_F32[@]}" --dims "" --search-layers 24 \
    --search-iters 10
echo "done $(date -u +%H:%M); summary in $SUMMARY"
