//! Times the decoder's matrix-vector kernel (`model::gemv::matmul_t`) on musicgen-small's
//! product shapes, f32 and bf16 weights, for 1, 2 (one prompt with guidance), 4 and 8 input rows.
//!
//! `cargo run --release --example bench_gemv`. Each product reads one of several copies of the
//! weights, 96 MB in all, so the weights come from memory as in a real generation step (a single
//! matrix would sit in the L3 cache and measure the cache instead). Best of five runs.
use baton::model::gemv::matmul_t;
use candle_core::{DType, Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (n, k) in [(1024usize, 1024usize), (4096, 1024), (1024, 4096)] {
        for dtype in [DType::F32, DType::BF16] {
            let bytes = n * k * dtype.size_in_bytes();
            let copies = (96_000_000 / bytes).max(2);
            let ws = (0..copies)
                .map(|_| Tensor::randn(0f32, 1., (n, k), &dev)?.to_dtype(dtype))
                .collect::<candle_core::Result<Vec<_>>>()?;
            for m in [1usize, 2, 4, 8] {
                let x = Tensor::randn(0f32, 1., (m, k), &dev)?;
                let reps = 4 * copies;
                let mut s = f64::INFINITY;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    for w in ws.iter().cycle().take(reps) {
                        let _ = matmul_t(&x, w)?;
                    }
                    s = s.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                println!(
                    "{dtype:?} [{n} x {k}] rows {m}: {:.3} ms, {:.1} G weights/s, {:.1} GB/s",
                    s * 1e3,
                    (n * k) as f64 / s / 1e9,
                    bytes as f64 / s / 1e9
                );
            }
        }
    }
    Ok(())
}
