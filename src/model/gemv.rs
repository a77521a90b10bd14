//! A lean matrix-vector path for the decoder's generation steps.
//!
//! A generation step multiplies 2 rows (the CFG pair) by every weight matrix, so it is bound by
//! memory bandwidth: each weight byte must be read once, at full speed. candle's CPU matmul with
//! a transposed `[out, in]` weight and 2 rows reads at a fifth of that speed (measured: 1.6 GB/s
//! against 8-14 GB/s for 1 row), so small-row products come here: output rows are split across
//! threads and each weight row is streamed once against all input rows. bf16 weights are widened
//! to f32 on the fly (a shift), halving the bytes a step streams, and 8-bit weights ([`Q8`]) are
//! widened and scaled per row, quartering them. Which [`Kernel`] runs (generic, AVX2, AVX-512)
//! is decided at run time from the CPU.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

/// At most this many input rows take the matrix-vector path.
pub const MAX_ROWS: usize = 8;

/// Fewest output rows per parallel task (keeps rayon's overhead small against the work).
const ROWS_PER_TASK: usize = 64;

/// Output rows per task for `n` rows: two tasks per thread (a little balancing, few wake-ups),
/// at least [`ROWS_PER_TASK`], a multiple of 8 so the grouped kernels see whole groups.
fn rows_per_task(n: usize) -> usize {
    let tasks = 2 * rayon::current_num_threads().max(1);
    n.div_ceil(tasks).next_multiple_of(8).max(ROWS_PER_TASK)
}

/// Weight storage the kernel can stream.
enum Weights<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    /// 8-bit weights and one scale per row (see [`Q8`]).
    Q8(&'a [i8], &'a [f32]),
}

/// A weight matrix `[rows, cols]` in 8 bits: each row holds `round(w / scale)` in `-127..=127`
/// with `scale = max |w| / 127` of that row, a quarter of f32's bytes for an error of at most
/// half a step (`scale / 2`) per weight.
#[derive(Debug, Clone)]
pub struct Q8 {
    /// Quantized weights, row-major.
    pub data: Vec<i8>,
    /// One scale per row.
    pub scales: Vec<f32>,
    /// Output rows.
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
}

impl Q8 {
    /// Quantizes a `[rows, cols]` weight of any float dtype.
    pub fn quantize(w: &Tensor) -> candle_core::Result<Q8> {
        let (rows, cols) = w.dims2()?;
        let values: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut data = vec![0i8; rows * cols];
        let mut scales = vec![0f32; rows];
        data.par_chunks_mut(cols.max(1))
            .zip(scales.par_iter_mut())
            .zip(values.par_chunks(cols.max(1)))
            .for_each(|((q, scale), row)| {
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                *scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                for (q, v) in q.iter_mut().zip(row) {
                    *q = (v / *scale).round().clamp(-127.0, 127.0) as i8;
                }
            });
        Ok(Q8 {
            data,
            scales,
            rows,
            cols,
        })
    }

    /// The weight back in f32 `[rows, cols]` (for products with many rows, which take candle's
    /// matmul).
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let values: Vec<f32> = self
            .data
            .chunks(self.cols.max(1))
            .zip(&self.scales)
            .flat_map(|(row, s)| row.iter().map(move |&q| f32::from(q) * s))
            .collect();
        Tensor::from_vec(values, (self.rows, self.cols), device)
    }
}

/// `x · wᵀ` for `x` `[m, in]` (f32, m ≤ [`MAX_ROWS`], on the CPU) and 8-bit weights, with
/// [`Kernel::chosen`]; `None` when `x` does not fit this path.
pub fn matmul_t_q8(x: &Tensor, w: &Q8) -> candle_core::Result<Option<Tensor>> {
    matmul_t_q8_with(Kernel::chosen(), x, w)
}

/// [`matmul_t_q8`] with a given kernel.
pub fn matmul_t_q8_with(kernel: Kernel, x: &Tensor, w: &Q8) -> candle_core::Result<Option<Tensor>> {
    run(kernel, x, w.rows, w.cols, &Weights::Q8(&w.data, &w.scales))
}

/// A matrix-vector kernel: what the CPU runs a generation step's products with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust the compiler vectorises for the baseline target: runs anywhere.
    Generic,
    /// Explicit AVX2 + FMA (x86-64 since 2013-2015).
    Avx2,
    /// Explicit AVX-512F (Intel Xeon since Skylake-SP, AMD since Zen 4): twice the lanes.
    Avx512,
}

impl Kernel {
    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> &'static [Kernel] {
        // Looked up once: every product of every step checks its kernel against it.
        static AVAILABLE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut out = vec![Kernel::Generic];
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    out.push(Kernel::Avx2);
                }
                if std::is_x86_feature_detected!("avx512f") {
                    out.push(Kernel::Avx512);
                }
            }
            out
        })
    }

    /// The kernel products use: the fastest this CPU runs, or the one `BATON_GEMV` names
    /// (`generic`, `avx2`, `avx512`) when the CPU runs it (for benchmarks and checks).
    pub fn chosen() -> Kernel {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let available = Kernel::available();
            let pinned = std::env::var("BATON_GEMV")
                .ok()
                .and_then(|name| available.iter().copied().find(|k| k.name() == name));
            pinned.unwrap_or(available[available.len() - 1])
        })
    }

    /// The kernel's name, as `BATON_GEMV` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Generic => "generic",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

/// Computes `x · wᵀ` for `x` `[m, in]` (f32, m ≤ [`MAX_ROWS`]) and `w` `[out, in]` (f32 or bf16,
/// contiguous, on the CPU) with [`Kernel::chosen`]. Returns `None` when the inputs do not fit
/// this path.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    matmul_t_with(Kernel::chosen(), x, w)
}

/// [`matmul_t`] with a given kernel, which the CPU must support (see [`Kernel::available`]).
pub fn matmul_t_with(
    kernel: Kernel,
    x: &Tensor,
    w: &Tensor,
) -> candle_core::Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    if !w.is_contiguous() {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let weights = match cpu {
        CpuStorage::F32(v) => Weights::F32(window(v, layout, n * k)),
        CpuStorage::BF16(v) => Weights::Bf16(window(v, layout, n * k)),
        _ => return Ok(None),
    };
    run(kernel, x, n, k, &weights)
}

/// The parallel product over `n` weight rows of `k` inputs, whatever their storage.
fn run(
    kernel: Kernel,
    x: &Tensor,
    n: usize,
    k: usize,
    weights: &Weights,
) -> candle_core::Result<Option<Tensor>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    if !Kernel::available().contains(&kernel) {
        candle_core::bail!("this CPU cannot run the {} kernel", kernel.name());
    }
    let (m, k2) = x.dims2()?;
    if m == 0 || m > MAX_ROWS || k != k2 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (xs_storage, xs_layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(xs)) = &*xs_storage else {
        return Ok(None);
    };
    let xs = window(xs, xs_layout, m * k);
    // Output is [m, n]; tasks own disjoint column ranges, so compute into a transposed [n, m]
    // buffer (contiguous per task) and transpose at the end.
    let mut out_t = vec![0f32; n * m];
    let per_task = rows_per_task(n);
    out_t
        .par_chunks_mut(per_task * m)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * per_task;
            let rows = chunk.len() / m;
            let mut r = 0;
            // Groups of weight rows at once: several streams from memory in flight.
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx512 && m <= 2 {
                let g = match weights {
                    Weights::F32(_) => x86::GROUP_F32,
                    Weights::Bf16(_) | Weights::Q8(..) => x86::GROUP_BF16,
                };
                while r + g <= rows {
                    let j = first + r;
                    let dst = &mut chunk[r * m..(r + g) * m];
                    let span = j * k..(j + g) * k;
                    // SAFETY: `run` checked that the CPU runs the kernel.
                    unsafe {
                        match weights {
                            Weights::F32(w) => x86::dots_group_avx512(&w[span], xs, k, dst),
                            Weights::Bf16(w) => x86::dots_group_bf16_avx512(&w[span], xs, k, dst),
                            Weights::Q8(w, scales) => {
                                x86::dots_group_q8_avx512(&w[span], xs, k, dst);
                                scale_rows(dst, &scales[j..j + g], m);
                            }
                        }
                    }
                    r += g;
                }
            }
            for (r, dst) in chunk.chunks_mut(m).enumerate().skip(r) {
                let j = first + r;
                match weights {
                    Weights::F32(w) => dots(kernel, &w[j * k..(j + 1) * k], xs, k, dst),
                    Weights::Bf16(w) => dots_bf16(kernel, &w[j * k..(j + 1) * k], xs, k, dst),
                    Weights::Q8(w, scales) => {
                        dots_q8(kernel, &w[j * k..(j + 1) * k], xs, k, dst);
                        scale_rows(dst, &scales[j..j + 1], m);
                    }
                }
            }
        });
    let out = if m == 1 {
        out_t
    } else {
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            for i in 0..m {
                out[i * n + j] = out_t[j * m + i];
            }
        }
        out
    };
    Ok(Some(Tensor::from_vec(out, (m, n), &Device::Cpu)?))
}

fn window<'a, T>(v: &'a [T], layout: &Layout, len: usize) -> &'a [T] {
    let start = layout.start_offset();
    &v[start..start + len]
}

/// Lanes of independent accumulators, so the compiler can vectorise without reassociating.
const LANES: usize = 16;

/// `dst[i] = w · x[i]` for every input row `i` (`xs` holds `dst.len()` rows of `k`).
#[inline]
fn dots(kernel: Kernel, w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `run` checked that the CPU runs the kernel.
        Kernel::Avx512 => return unsafe { x86::dots_avx512(w, xs, k, dst) },
        Kernel::Avx2 => return unsafe { x86::dots_avx2(w, xs, k, dst) },
        Kernel::Generic => {}
    }
    let _ = kernel;
    dots_generic(w, xs, k, dst)
}

/// The portable kernel for f32 and 8-bit weights (each widened as it is read).
#[inline(always)]
fn dots_generic<T: Copy + Into<f32>>(w: &[T], xs: &[f32], k: usize, dst: &mut [f32]) {
    for (i, d) in dst.iter_mut().enumerate() {
        let x = &xs[i * k..(i + 1) * k];
        let mut acc = [0f32; LANES];
        let full = k - k % LANES;
        for (wb, xb) in w[..full]
            .chunks_exact(LANES)
            .zip(x[..full].chunks_exact(LANES))
        {
            for l in 0..LANES {
                acc[l] += wb[l].into() * xb[l];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for p in full..k {
            s += w[p].into() * x[p];
        }
        *d = s;
    }
}

/// [`dots`] for bf16 weights, widened to f32 on the fly.
#[inline]
fn dots_bf16(kernel: Kernel, w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `run` checked that the CPU runs the kernel.
        Kernel::Avx512 => return unsafe { x86::dots_bf16_avx512(w, xs, k, dst) },
        Kernel::Avx2 => return unsafe { x86::dots_bf16_avx2(w, xs, k, dst) },
        Kernel::Generic => {}
    }
    let _ = kernel;
    dots_bf16_generic(w, xs, k, dst)
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

/// Multiplies each weight row's `m` outputs (`dst` is `[row][input]`) by the row's scale.
#[inline]
fn scale_rows(dst: &mut [f32], scales: &[f32], m: usize) {
    for (out, s) in dst.chunks_mut(m).zip(scales) {
        out.iter_mut().for_each(|v| *v *= s);
    }
}

/// [`dots`] for 8-bit weights, before their row's scale.
#[inline]
fn dots_q8(kernel: Kernel, w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `run` checked that the CPU runs the kernel.
        Kernel::Avx512 => return unsafe { x86::dots_q8_avx512(w, xs, k, dst) },
        Kernel::Avx2 => return unsafe { x86::dots_q8_avx2(w, xs, k, dst) },
        Kernel::Generic => {}
    }
    let _ = kernel;
    dots_generic(w, xs, k, dst)
}

/// The explicit x86-64 kernels. Each streams its weight rows once, a vector at a time, widening
/// bf16 or 8-bit weights to f32 in registers, against every input row, whose accumulators stay
/// in registers (row counts are const parameters); the tail past the last whole vector is summed
/// in scalar code. The AVX-512 kernels take a group of weight rows at once (one row for the
/// rows a group leaves over), the AVX2 ones one row.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Calls `$body::<M>` for the runtime row count `m` (1..=MAX_ROWS).
    macro_rules! by_rows {
        ($m:expr, $f:ident, $($arg:expr),*) => {
            match $m {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                6 => $f::<6>($($arg),*),
                7 => $f::<7>($($arg),*),
                _ => $f::<8>($($arg),*),
            }
        };
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_avx512(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), one_f32_512, w, xs, k, dst)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_bf16_avx512(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), one_bf16_512, w, xs, k, dst)
    }

    /// One grouped kernel per weight type: `R` weight rows (one after another in `w`) against
    /// `M` input rows, `dst` `[row][input]`. A macro rather than a closure for the load: a
    /// closure is not compiled with the kernel's target features, so its intrinsics would be
    /// calls instead of single instructions.
    macro_rules! grouped {
        ($name:ident, $t:ty, $load:ident, $to_f32:expr) => {
            #[target_feature(enable = "avx512f")]
            unsafe fn $name<const R: usize, const M: usize>(
                w: &[$t],
                xs: &[f32],
                k: usize,
                dst: &mut [f32],
            ) {
                let full = k - k % 16;
                let mut acc = [[_mm512_setzero_ps(); M]; R];
                let (wp, xp) = (w.as_ptr(), xs.as_ptr());
                let mut p = 0;
                while p < full {
                    let mut xv = [_mm512_setzero_ps(); M];
                    for (i, v) in xv.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(xp.add(i * k + p));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = $load(wp.add(r * k + p));
                        for i in 0..M {
                            a[i] = _mm512_fmadd_ps(wv, xv[i], a[i]);
                        }
                    }
                    p += 16;
                }
                let to_f32 = $to_f32;
                for r in 0..R {
                    for i in 0..M {
                        let tail: f32 = (full..k)
                            .map(|q| to_f32(w[r * k + q]) * xs[i * k + q])
                            .sum();
                        dst[r * M + i] = _mm512_reduce_add_ps(acc[r][i]) + tail;
                    }
                }
            }
        };
    }
    grouped!(group_f32_512, f32, _mm512_loadu_ps, |v: f32| v);
    grouped!(group_bf16_512, half::bf16, widen16, |v: half::bf16| v
        .to_f32());
    grouped!(group_q8_512, i8, widen16_i8, |v: i8| f32::from(v));

    /// 16 signed bytes from `src`, as f32.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn widen16_i8(src: *const i8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(src as *const __m128i)))
    }

    /// [`GROUP_BF16`] 8-bit weight rows against 1 or 2 input rows, before the rows' scales.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_group_q8_avx512(w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
        if dst.len() == GROUP_BF16 {
            group_q8_512::<GROUP_BF16, 1>(w, xs, k, dst)
        } else {
            group_q8_512::<GROUP_BF16, 2>(w, xs, k, dst)
        }
    }

    /// One 8-bit weight row against every input row, before its scale.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_q8_avx512(w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), one_q8_512, w, xs, k, dst)
    }

    /// One weight row against `M` input rows: the grouped kernel with a group of one.
    macro_rules! one_row_512 {
        ($name:ident, $group:ident, $t:ty) => {
            #[target_feature(enable = "avx512f")]
            unsafe fn $name<const M: usize>(w: &[$t], xs: &[f32], k: usize, dst: &mut [f32]) {
                $group::<1, M>(w, xs, k, dst)
            }
        };
    }
    one_row_512!(one_f32_512, group_f32_512, f32);
    one_row_512!(one_bf16_512, group_bf16_512, half::bf16);
    one_row_512!(one_q8_512, group_q8_512, i8);

    /// One 8-bit weight row against every input row, before its scale.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_q8_avx2(w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), q8_256, w, xs, k, dst)
    }

    /// [`GROUP_F32`] weight rows (`w` holds them one after another) against 1 or 2 input rows:
    /// `dst` is `[row][input]`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_group_avx512(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
        if dst.len() == GROUP_F32 {
            group_f32_512::<GROUP_F32, 1>(w, xs, k, dst)
        } else {
            group_f32_512::<GROUP_F32, 2>(w, xs, k, dst)
        }
    }

    /// [`GROUP_BF16`] bf16 weight rows against 1 or 2 input rows (see [`dots_group_avx512`]).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_group_bf16_avx512(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
        if dst.len() == GROUP_BF16 {
            group_bf16_512::<GROUP_BF16, 1>(w, xs, k, dst)
        } else {
            group_bf16_512::<GROUP_BF16, 2>(w, xs, k, dst)
        }
    }

    /// Weight rows streamed at once by the grouped kernels: several streams from memory in
    /// flight instead of one (measured: f32 products of 2 rows went from 14-16 to 22-25 GB/s
    /// on a 2-core Xeon). bf16 rows are half as long, so twice as many make the same bytes.
    pub const GROUP_F32: usize = 4;
    /// See [`GROUP_F32`].
    pub const GROUP_BF16: usize = 8;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_avx2(w: &[f32], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), f32_256, w, xs, k, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_bf16_avx2(w: &[half::bf16], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), bf16_256, w, xs, k, dst)
    }

    /// Sums what the vector loop left: positions `from..k`.
    #[inline(always)]
    fn tail<const M: usize>(
        w: impl Fn(usize) -> f32,
        xs: &[f32],
        k: usize,
        from: usize,
        dst: &mut [f32],
    ) {
        for (i, d) in dst.iter_mut().enumerate().take(M) {
            *d += (from..k).map(|p| w(p) * xs[i * k + p]).sum::<f32>();
        }
    }

    /// 16 bf16 values from `src`, widened to f32 (bf16 is the top half of an f32).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn widen16(src: *const half::bf16) -> __m512 {
        let raw = _mm256_loadu_si256(src as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// 8 bf16 values from `src`, widened to f32.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn widen8(src: *const half::bf16) -> __m256 {
        let raw = _mm_loadu_si128(src as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    }

    /// 8 signed bytes from `src`, as f32.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn widen8_i8(src: *const i8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(src as *const __m128i)))
    }

    /// One weight row against `M` input rows, 8 lanes a step (a macro for the same reason as
    /// `grouped!`).
    macro_rules! one_row_256 {
        ($name:ident, $t:ty, $load:ident, $to_f32:expr) => {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $name<const M: usize>(w: &[$t], xs: &[f32], k: usize, dst: &mut [f32]) {
                let full = k - k % 8;
                let mut acc = [_mm256_setzero_ps(); M];
                let (wp, xp) = (w.as_ptr(), xs.as_ptr());
                let mut p = 0;
                while p < full {
                    let wv = $load(wp.add(p));
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i * k + p)), *a);
                    }
                    p += 8;
                }
                for (d, a) in dst.iter_mut().zip(&acc) {
                    *d = hsum256(*a);
                }
                let to_f32 = $to_f32;
                tail::<M>(|p| to_f32(w[p]), xs, k, full, dst);
            }
        };
    }
    one_row_256!(f32_256, f32, _mm256_loadu_ps, |v: f32| v);
    one_row_256!(bf16_256, half::bf16, widen8, |v: half::bf16| v.to_f32());
    one_row_256!(q8_256, i8, widen8_i8, |v: i8| f32::from(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;

    #[test]
    fn kernels_this_cpu_runs() {
        let all = Kernel::available();
        assert_eq!(all[0], Kernel::Generic);
        assert!(all.contains(&Kernel::chosen()));
        eprintln!("gemv kernels checked on this CPU: {all:?}");
        // A kernel the CPU lacks is refused, not run.
        #[cfg(target_arch = "x86_64")]
        if !all.contains(&Kernel::Avx512) {
            let x = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
            let w = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
            assert!(matmul_t_with(Kernel::Avx512, &x, &w).is_err());
        }
    }

    #[test]
    fn q8_weights_round_within_half_a_step_and_every_kernel_agrees() {
        let dev = Device::Cpu;
        for (m, n, k) in [
            (1, 70, 37),
            (2, 130, 1024),
            (3, 9, 200),
            (8, 66, 1024),
            (2, 5, 7),
        ] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
            let q = Q8::quantize(&w).unwrap();
            let back = q.dequantize(&dev).unwrap();
            let err: Vec<Vec<f32>> = (&back - &w).unwrap().abs().unwrap().to_vec2().unwrap();
            for (row, s) in err.iter().zip(&q.scales) {
                assert!(
                    row.iter().all(|e| *e <= s / 2.0 + 1e-6),
                    "rounding past half a step"
                );
            }
            let want = x.matmul(&back.t().unwrap()).unwrap();
            for &kernel in Kernel::available() {
                let got = matmul_t_q8_with(kernel, &x, &q).unwrap().unwrap();
                let d = max_abs_diff(&got, &want);
                assert!(d < 1e-3, "{kernel:?} q8 m{m} n{n} k{k}: {d}");
            }
        }
        // An all-zero row quantizes to zeros (scale 1, no division by zero).
        let zero = Q8::quantize(&Tensor::zeros((2, 8), DType::F32, &dev).unwrap()).unwrap();
        assert!(zero.data.iter().all(|&q| q == 0));
    }

    #[test]
    fn matches_candle_matmul() {
        let dev = Device::Cpu;
        // Every row count, rows with a tail past the last chunk, and long rows.
        for (m, n, k) in [
            (1, 70, 37),
            (2, 130, 64),
            (3, 9, 200),
            (2, 20, 2500),
            (5, 70, 1100),
            (4, 33, 48),
            (6, 17, 96),
            (7, 5, 31),
            (8, 66, 1024),
        ] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let wb = w.to_dtype(DType::BF16).unwrap();
            let widened = x
                .matmul(&wb.to_dtype(DType::F32).unwrap().t().unwrap())
                .unwrap();
            // Every kernel this CPU runs agrees with candle (the others are checked on the
            // machines that have them; `kernels_this_cpu_runs` says which ran here).
            for &kernel in Kernel::available() {
                let other = matmul_t_with(kernel, &x, &w).unwrap().unwrap();
                let d = max_abs_diff(&other, &want);
                assert!(d < 1e-3, "{kernel:?} f32 m{m} n{n} k{k}: {d}");
                let other = matmul_t_with(kernel, &x, &wb).unwrap().unwrap();
                let d = max_abs_diff(&other, &widened);
                assert!(d < 1e-3, "{kernel:?} bf16 m{m} n{n} k{k}: {d}");
            }
            // And so does the chosen one, through `matmul_t`.
            let got = matmul_t(&x, &w).unwrap().unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-3, "f32 m{m} n{n} k{k}: {d}");
            let got = matmul_t(&x, &wb).unwrap().unwrap();
            let d = max_abs_diff(&got, &widened);
            assert!(d < 1e-3, "bf16 m{m} n{n} k{k}: {d}");
        }
    }
}
