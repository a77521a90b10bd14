//! A lean matrix-vector path for the decoder's generation steps.
//!
//! A generation step multiplies 2 rows (the CFG pair) by every weight matrix, so it is bound by
//! memory bandwidth: each weight byte must be read once, at full speed. candle's CPU matmul with
//! a transposed `[out, in]` weight and 2 rows reads at a fifth of that speed (measured: 1.6 GB/s
//! against 8-14 GB/s for 1 row), so small-row products come here: output rows are split across
//! threads and each weight row is streamed once against all input rows. bf16 weights are widened
//! to f32 on the fly (a shift), halving the bytes a step streams.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

/// At most this many input rows take the matrix-vector path.
pub const MAX_ROWS: usize = 8;

/// Output rows per parallel task (keeps rayon's overhead small against the work).
const ROWS_PER_TASK: usize = 64;

/// Inputs per tile of a long row (see [`matmul_t`]).
const TILE: usize = 1024;

/// Weight storage the kernel can stream.
enum Weights<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
}

/// Computes `x · wᵀ` for `x` `[m, in]` (f32, m ≤ [`MAX_ROWS`]) and `w` `[out, in]` (f32 or bf16,
/// contiguous, on the CPU). Returns `None` when the inputs do not fit this path.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if m > MAX_ROWS || k != k2 || !w.is_contiguous() {
        return Ok(None);
    }
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let weights = match cpu {
        CpuStorage::F32(v) => Weights::F32(window(v, layout, n * k)),
        CpuStorage::BF16(v) => Weights::Bf16(window(v, layout, n * k)),
        _ => return Ok(None),
    };
    let mut out = vec![0f32; m * n];
    // Long rows go in tiles of TILE inputs, each tile of x held in L1 across a task's weight
    // rows (two 4096-wide rows of x would not fit beside the weights streaming past).
    let tiles: Vec<(usize, Vec<f32>)> = if k <= TILE {
        vec![(0, xs)]
    } else {
        (0..k)
            .step_by(TILE)
            .map(|t0| {
                let len = TILE.min(k - t0);
                let tile = xs
                    .chunks_exact(k)
                    .flat_map(|row| &row[t0..t0 + len])
                    .copied()
                    .collect();
                (t0, tile)
            })
            .collect()
    };
    // Output is [m, n]; tasks own disjoint column ranges, so compute into a transposed [n, m]
    // buffer (contiguous per task) and transpose at the end.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            let mut part = [0f32; MAX_ROWS];
            for (t0, tile) in &tiles {
                let len = tile.len() / m;
                for (r, dst) in chunk.chunks_mut(m).enumerate() {
                    let at = (first + r) * k + t0;
                    let part = &mut part[..m];
                    match &weights {
                        Weights::F32(w) => dots(&w[at..at + len], tile, len, part),
                        Weights::Bf16(w) => dots_bf16(&w[at..at + len], tile, len, part),
                    }
                    dst.iter_mut().zip(part.iter()).for_each(|(d, p)| *d += p);
                }
            }
        });
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    Ok(Some(Tensor::from_vec(out, (m, n), &Device::Cpu)?))
}

fn window<'a, T>(v: &'a [T], layout: &Layout, len: usize) -> &'a [T] {
    let start = layout.start_offset();
    &v[start..start + len]
}

/// Lanes of independent accumulators, so the compiler can vectorise without reassociating.
const LANES: usize = 16;

/// `dst[i] = w · x[i]` for every input row `i`.
#[inline]
fn dots(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { dots_avx2(w, xs, k, dst) };
            return;
        }
    }
    dots_generic(w, xs, k, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
    avx2::dots(w, xs, k, dst, |p| unsafe { avx2::load_f32(p) })
}

#[inline(always)]
fn dots_generic(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
    for (i, d) in dst.iter_mut().enumerate() {
        let x = &xs[i * k..(i + 1) * k];
        let mut acc = [0f32; LANES];
        let (wc, wr) = w.split_at(k - k % LANES);
        let (xc, xr) = x.split_at(k - k % LANES);
        for (wb, xb) in wc.chunks_exact(LANES).zip(xc.chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] += wb[l] * xb[l];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in wr.iter().zip(xr) {
            s += a * b;
        }
        *d = s;
    }
}

#[inline]
fn dots_bf16(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            unsafe { dots_bf16_avx2(w, xs, k, dst) };
            return;
        }
    }
    dots_bf16_generic(w, xs, k, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_bf16_avx2(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
    avx2::dots(w, xs, k, dst, |p| unsafe { avx2::load_bf16(p) })
}

#[inline(always)]
fn dots_bf16_generic(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
    // Widen one chunk of the weight row once, then use it for every input row.
    let mut wide = [0f32; LANES];
    let mut acc = [[0f32; LANES]; MAX_ROWS];
    let m = dst.len();
    let full = k - k % LANES;
    for (c, wb) in w[..full].chunks_exact(LANES).enumerate() {
        for l in 0..LANES {
            wide[l] = f32::from_bits((wb[l].to_bits() as u32) << 16);
        }
        for (i, a) in acc.iter_mut().enumerate().take(m) {
            let xb = &xs[i * k + c * LANES..i * k + (c + 1) * LANES];
            for l in 0..LANES {
                a[l] += wide[l] * xb[l];
            }
        }
    }
    for (i, d) in dst.iter_mut().enumerate() {
        let mut s: f32 = acc[i].iter().sum();
        for p in full..k {
            s += w[p].to_f32() * xs[i * k + p];
        }
        *d = s;
    }
}

/// AVX2 + FMA kernels. Generation is latency-bound with one accumulator chain per row (each
/// addition waits for the one before), so each input row gets four independent 8-lane
/// accumulators, and rows go in pairs so each widened weight chunk serves two rows.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Weights per chunk: four 8-lane registers.
    const CHUNK: usize = 32;

    /// Eight f32 weights from `p`.
    #[inline(always)]
    pub unsafe fn load_f32(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }

    /// Eight bf16 weights from `p`, widened to f32 (bf16 is the top half of an f32).
    #[inline(always)]
    pub unsafe fn load_bf16(p: *const half::bf16) -> __m256 {
        unsafe {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        }
    }

    #[inline(always)]
    unsafe fn sum(acc: [__m256; 4]) -> f32 {
        unsafe {
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_movehdup_ps(q));
            _mm_cvtss_f32(q)
        }
    }

    /// `dst[i] = w · x[i]` for every input row `i` (`w` has `k` elements, `xs` `dst.len()` rows
    /// of `k`), with `load` reading eight weights as f32.
    #[inline(always)]
    pub unsafe fn dots<W: Copy + super::Widen>(
        w: &[W],
        xs: &[f32],
        k: usize,
        dst: &mut [f32],
        load: impl Fn(*const W) -> __m256,
    ) {
        assert!(w.len() >= k && xs.len() >= k * dst.len());
        let full = k - k % CHUNK;
        let m = dst.len();
        let wp = w.as_ptr();
        let mut i = 0;
        while i < m {
            let x0 = xs[i * k..].as_ptr();
            // SAFETY: every offset read is below `full <= k`, inside the row (asserted above).
            unsafe {
                if i + 1 < m {
                    let x1 = xs[(i + 1) * k..].as_ptr();
                    let mut a0 = [_mm256_setzero_ps(); 4];
                    let mut a1 = [_mm256_setzero_ps(); 4];
                    let mut c = 0;
                    while c < full {
                        for q in 0..4 {
                            let wv = load(wp.add(c + 8 * q));
                            a0[q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0.add(c + 8 * q)), a0[q]);
                            a1[q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1.add(c + 8 * q)), a1[q]);
                        }
                        c += CHUNK;
                    }
                    dst[i] = sum(a0) + super::tail(&w[full..k], &xs[i * k + full..(i + 1) * k]);
                    dst[i + 1] =
                        sum(a1) + super::tail(&w[full..k], &xs[(i + 1) * k + full..(i + 2) * k]);
                    i += 2;
                } else {
                    let mut a0 = [_mm256_setzero_ps(); 4];
                    let mut c = 0;
                    while c < full {
                        for q in 0..4 {
                            let wv = load(wp.add(c + 8 * q));
                            a0[q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0.add(c + 8 * q)), a0[q]);
                        }
                        c += CHUNK;
                    }
                    dst[i] = sum(a0) + super::tail(&w[full..k], &xs[i * k + full..(i + 1) * k]);
                    i += 1;
                }
            }
        }
    }
}

/// A weight element widened to f32.
trait Widen: Copy {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// The products past the last whole chunk.
#[inline(always)]
fn tail<W: Widen>(w: &[W], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a.widen() * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_matmul() {
        let dev = Device::Cpu;
        // Odd and even row counts, rows with a tail past the last chunk, and rows long enough to
        // be tiled (with a short last tile).
        for (m, n, k) in [
            (1, 70, 37),
            (2, 130, 64),
            (3, 9, 200),
            (2, 20, 2500),
            (5, 70, 1100),
        ] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = matmul_t(&x, &w).unwrap().unwrap();
            let d: f32 = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-4, "f32 m{m} n{n} k{k}: {d}");
            let wb = w.to_dtype(DType::BF16).unwrap();
            let want = x
                .matmul(&wb.to_dtype(DType::F32).unwrap().t().unwrap())
                .unwrap();
            let got = matmul_t(&x, &wb).unwrap().unwrap();
            let d: f32 = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-3, "bf16 m{m} n{n} k{k}: {d}");
        }
    }
}
