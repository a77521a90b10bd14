use candle_core::{DType, Device, Tensor};
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (n, k) in [(4096usize, 1024usize), (1024, 4096), (2048, 1024)] {
        let w = Tensor::randn(0f32, 1., (n, k), &dev)?;
        let wt = w.t()?.contiguous()?; // [k, n]
        for m in [1usize, 2, 4] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev)?;
            let reps = 50;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let _ = x.matmul(&w.t()?)?;
            }
            let a = t.elapsed().as_secs_f64() / reps as f64;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let _ = x.matmul(&wt)?;
            }
            let b = t.elapsed().as_secs_f64() / reps as f64;
            let gb = (n * k * 4) as f64 / 1e9;
            println!(
                "n{n} k{k} m{m}: w.t() {:.2} ms ({:.1} GB/s), pre-transposed {:.2} ms ({:.1} GB/s)",
                a * 1e3,
                gb / a,
                b * 1e3,
                gb / b
            );
        }
    }
    let _ = DType::F32;
    Ok(())
}
