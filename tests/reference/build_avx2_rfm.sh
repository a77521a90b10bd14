#!/usr/bin/env bash
# Builds a baton whose RFM arithmetic stops at AVX2 on an AVX-512 machine, to stand in for the
# AVX2-only CPU class in bench_rfm.py (run it with BATON_RFM_SIMD=avx2 as well, which holds
# baton's own elementwise loops; torch is held with ATEN_CPU_CAPABILITY=avx2
# ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2).
#
# faer picks its GEMM kernels with `is_x86_feature_detected!("avx512f")` and has no switch, so
# this copies the faer sources that Cargo.lock names out of the cargo registry into
# target/avx2-rfm/, turns those checks into `false`, and builds baton against the copy with
# `--no-default-features` (the default `avx512` feature also switches on pulp's AVX-512 paths,
# which faer shares). Nothing of faer's is kept in the repository.
#
# Usage (from the repository root): tests/reference/build_avx2_rfm.sh
# Prints the path of the built binary: pass it to bench_rfm.py --baton.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/avx2-rfm
faer_toml=$(cargo metadata --format-version 1 --locked |
    grep -o '"manifest_path":"[^"]*/faer-[0-9][^"/]*/Cargo.toml"' | head -n 1 |
    sed 's/"manifest_path":"//; s/"$//')
[ -n "$faer_toml" ] || { echo "faer not found in cargo metadata" >&2; exit 1; }
src=$(dirname "$faer_toml")
mkdir -p "$out"
rm -rf "$out/faer"
cp -r "$src" "$out/faer"
perl -0pi -e 's/(std::(arch::)?)?is_x86_feature_detected!\(\s*"avx512f"\s*\)/false/g' \
    $(grep -rl 'avx512f' "$out/faer/src")
if grep -rqE 'is_x86_feature_detected!\(\s*"avx512f"' "$out/faer/src"; then
    echo "an AVX-512 check is left in $out/faer" >&2
    exit 1
fi
# A path patch rewrites Cargo.lock's faer entry: keep the committed one.
cp Cargo.lock "$out/Cargo.lock.kept"
trap 'cp "$out/Cargo.lock.kept" Cargo.lock' EXIT
cargo build --release --bin baton --no-default-features --target-dir "$out/target" \
    --config "patch.crates-io.faer.path=\"$PWD/$out/faer\"" >&2
echo "$out/target/release/baton"
