#!/usr/bin/env bash
# EnCodec alone against transformers, side by side in one run: decode (the first call in a fresh
# process, and the same decode again in it) and encode of SECONDS of
# audio (default 10) with the codec of a musicgen-small-shaped random checkpoint
# (tests/reference/bench_small_shaped.py build DIR, made if missing), both sides on the same
# threads, rounds interleaved, each side a fresh process per round. Prints every round and, per side, the median with the spread (min..max).
#
#   tests/reference/bench_encodec.sh DIR [ROUNDS] [SECONDS] [THREADS]
#
# Needs the pinned Python environment (tests/reference/setup.sh; PYTHON=path overrides); builds
# the bench_encodec example in release.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:?usage: bench_encodec.sh DIR [ROUNDS] [SECONDS] [THREADS]}
ROUNDS=${2:-3}
SECS=${3:-10}
THREADS=${4:-$(nproc)}
PY=${PYTHON:-$(tests/reference/setup.sh)}
[ -f "$DIR/model.safetensors" ] || "$PY" tests/reference/bench_small_shaped.py build "$DIR"
cargo build --release --quiet --example bench_encodec
EXE=${CARGO_TARGET_DIR:-target}/release/examples/bench_encodec
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
export RAYON_NUM_THREADS=$THREADS

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $THREADS threads, $SECS s of audio"
pick='import json,sys; d=json.loads(sys.stdin.read()); print(d["encodec_decode_s"], d["encodec_decode_warm_s"], d["encodec_encode_s"])'
for r in $(seq 1 "$ROUNDS"); do
    t=$("$PY" tests/reference/bench_small_shaped.py encodec "$DIR" --seconds "$SECS" --threads "$THREADS" 2>/dev/null | "$PY" -c "$pick")
    b=$("$EXE" "$DIR" "$SECS" | "$PY" -c "$pick")
    echo "round $r (decode s, decode again s, encode s): transformers $t, baton $b"
    echo "transformers $t" >> "$OUT"
    echo "baton $b" >> "$OUT"
done
"$PY" - "$OUT" <<'PYEOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for i, what in enumerate(("decode (first call)", "decode (again)", "encode")):
    med = {}
    for side in ("transformers", "baton"):
        v = [float(r[1 + i]) for r in rows if r[0] == side]
        med[side] = statistics.median(v)
        print(f"{what} {side}: median {med[side]:.3f} s ({min(v):.3f}..{max(v):.3f})")
    print(f"{what}: baton takes {med['baton'] / med['transformers']:.2f}x transformers' time")
PYEOF
