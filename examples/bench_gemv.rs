//! Times the decoder's matrix-vector kernels (`model::gemv`) on musicgen-small's product shapes,
//! 8-bit, 4-bit (ours and candle's Q4_0), f32 and bf16 weights, 1 and 2 input rows (2: one prompt with guidance), for every kernel this
//! CPU runs, next to the machine's read bandwidth measured the same way (a sum over 1 GiB with
//! as many threads): the physical limit a weight-streaming step can reach.
//!
//! `cargo run --release --example bench_gemv`. Each product reads one of several copies of the
//! weights, 256 MB in all, so the weights come from memory as in a real generation step (a
//! single matrix would sit in the L3 cache and measure the cache instead). Best of five runs.
//! `BENCH_ONLY=BF16,Q8` times only the listed weight types, `BENCH_CACHED=1` leaves the weights
//! in the cache (one copy), and the kernels' own switches apply (`BATON_BF16_DOT=0`).
use baton::model::gemv::{matmul_t_q4_with, matmul_t_q8_with, matmul_t_with, Kernel, Q4, Q8};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use rayon::prelude::*;

/// GB/s of summing a 1 GiB buffer, split over rayon's threads: what memory gives a reader.
fn read_bandwidth() -> f64 {
    let data = vec![1f32; 1 << 28];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        // Eight streams per task (as the kernels read several weight rows at once), sixteen
        // independent sums each, so the reads are vectorised and many are in flight.
        let s: f32 = data
            .par_chunks(1 << 17)
            .map(|c| {
                let mut acc = [[0f32; 16]; 8];
                let part = c.len() / 8;
                for b in (0..part).step_by(16) {
                    for (s, a) in acc.iter_mut().enumerate() {
                        let x = &c[s * part + b..s * part + b + 16];
                        for l in 0..16 {
                            a[l] += x[l];
                        }
                    }
                }
                acc.iter().flatten().sum::<f32>()
            })
            .sum();
        std::hint::black_box(s);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (data.len() * 4) as f64 / best / 1e9
}

/// Copies of a `bytes`-sized matrix that make 256 MB: more than any cache holds. With
/// `BENCH_CACHED=1`, one copy, which stays in the cache: what the kernel's arithmetic allows
/// where memory is not the limit.
fn copies_for(bytes: usize) -> usize {
    if std::env::var("BENCH_CACHED").as_deref() == Ok("1") {
        return 1;
    }
    (256_000_000 / bytes).max(2)
}

/// Times `product` over `copies` (cycled, best of five runs) for 1 and 2 input rows with every
/// kernel this CPU runs, and prints ms and GB/s of `bytes` per product.
fn report<W>(
    label: &str,
    n: usize,
    k: usize,
    bytes: usize,
    copies: &[W],
    product: impl Fn(Kernel, &Tensor, &W) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    for m in [1usize, 2] {
        let x = Tensor::randn(0f32, 1., (m, k), &Device::Cpu)?;
        for &kernel in Kernel::available() {
            let reps = 2 * copies.len();
            let mut s = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for w in copies.iter().cycle().take(reps) {
                    product(kernel, &x, w)?;
                }
                s = s.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            println!(
                "{label} [{n} x {k}] rows {m} {:>7}: {:.3} ms, {:.1} GB/s",
                kernel.name(),
                s * 1e3,
                bytes as f64 / s / 1e9
            );
        }
    }
    Ok(())
}

/// Whether to time the weight type printed as `label`: all of them, or those `BENCH_ONLY` lists
/// (comma-separated labels, e.g. `BENCH_ONLY=BF16,Q8`).
fn wanted(label: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|l| l.trim() == label))
}

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    println!(
        "memory read bandwidth ({} threads): {:.1} GB/s",
        rayon::current_num_threads(),
        read_bandwidth()
    );
    for (n, k) in [(1024usize, 1024usize), (4096, 1024), (1024, 4096)] {
        // 8-bit weights: a quarter of f32's bytes.
        if wanted("Q8") {
            let qs = (0..copies_for(n * k))
                .map(|_| Q8::quantize(&Tensor::randn(0f32, 1., (n, k), &dev)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            report("Q8", n, k, n * k, &qs, |kernel, x, q| {
                matmul_t_q8_with(kernel, x, q).map(drop)
            })?;
        }
        // 4-bit weights: nibbles and an f32 scale per 32 (5 bits a weight).
        if wanted("Q4") {
            let q4s = (0..copies_for(n * k * 5 / 8))
                .map(|_| Q4::quantize(&Tensor::randn(0f32, 1., (n, k), &dev)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            report("Q4", n, k, n * k * 5 / 8, &q4s, |kernel, x, q| {
                matmul_t_q4_with(kernel, x, q).map(drop)
            })?;
        }
        // candle's own 4-bit matmul (GGML's Q4_0: blocks of 32, an f16 scale, 18 bytes per
        // block), the alternative to a 4-bit format of our own; its threads are candle's, so
        // every kernel label runs the same code.
        if wanted("candle Q4_0") {
            let qs = (0..copies_for(n * k / 2))
                .map(|_| {
                    let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
                    QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q4_0)?)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            report("candle Q4_0", n, k, n * k / 32 * 18, &qs, |_, x, q| {
                q.forward(x).map(drop)
            })?;
        }
        for dtype in [DType::F32, DType::BF16] {
            if !wanted(&format!("{dtype:?}")) {
                continue;
            }
            let bytes = n * k * dtype.size_in_bytes();
            let ws = (0..copies_for(bytes))
                .map(|_| Tensor::randn(0f32, 1., (n, k), &dev)?.to_dtype(dtype))
                .collect::<candle_core::Result<Vec<_>>>()?;
            report(&format!("{dtype:?}"), n, k, bytes, &ws, |kernel, x, w| {
                matmul_t_with(kernel, x, w).map(drop)
            })?;
        }
    }
    Ok(())
}
