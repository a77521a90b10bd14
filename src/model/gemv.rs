//! A lean matrix-vector path for the decoder's generation steps.
//!
//! A generation step multiplies 2 rows (the CFG pair) by every weight matrix, so it is bound by
//! memory bandwidth: each weight byte must be read once, at full speed. candle's CPU matmul with
//! a transposed `[out, in]` weight and 2 rows reads at a fifth of that speed (measured: 1.6 GB/s
//! against 8-14 GB/s for 1 row), so small-row products come here: output rows are split across
//! threads and each weight row is streamed once against all input rows. bf16 weights halve the
//! bytes a step streams: multiplied in bf16 by AVX-512 BF16's `vdpbf16ps` where the CPU has it
//! (the input rows rounded to bf16), else widened to f32 on the fly (a shift). 8-bit weights
//! ([`Q8`], a quarter of f32's bytes, scaled per row) are multiplied as bytes against input rows
//! quantized to 8 bits by AVX-512 VNNI's `vpdpbusd` where the CPU has it, else widened to f32.
//! 4-bit weights ([`Q4`]) are always multiplied as bytes against 8-bit input rows (see the `q4`
//! module). Which [`Kernel`] runs (generic, AVX2, AVX-512) is decided at run time from the CPU.
//! The same kernels take a step's attention over the cache, one head at a time: its scores as
//! a product with the cached keys' rows (`rows_dot`) and its weighted sum of the cached values
//! (`weighted_rows`), f32 or bf16.

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

mod q4;
use q4::{QuantizedRows, BYTE_OFFSET, NIBBLE_OFFSET};
pub use q4::{Q4, Q4_BLOCK};

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
pub(crate) enum Weights<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    /// 8-bit weights and one scale per row (see [`Q8`]).
    Q8(&'a [i8], &'a [f32]),
    /// 4-bit weights (see [`Q4`]).
    Q4(&'a Q4),
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
        with_f32_rows(w, |rows, cols| Q8::from_rows(rows, cols, 1.0))
    }

    /// Quantizes the weight whose rows are `rows` (`cols` values each), every value multiplied
    /// by `factor` first (as candle's `w * factor` rounds it): rows read where they lie, such as
    /// in the checkpoint's memory map, with no f32 copy of the weight.
    pub fn from_rows(rows: &[&[f32]], cols: usize, factor: f32) -> Q8 {
        assert!(
            rows.iter().all(|r| r.len() == cols),
            "rows of {cols} values"
        );
        let mut data = vec![0i8; rows.len() * cols];
        let mut scales = vec![0f32; rows.len()];
        data.par_chunks_mut(cols.max(1))
            .zip(scales.par_iter_mut())
            .zip(rows.par_iter())
            .for_each(|((q, scale), row)| {
                let max = row
                    .iter()
                    .fold(0f32, |m, &v| m.max(scaled(v, factor).abs()));
                *scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                for (q, &v) in q.iter_mut().zip(row.iter()) {
                    *q = round_to_i8(scaled(v, factor) / *scale);
                }
            });
        Q8 {
            data,
            scales,
            rows: rows.len(),
            cols,
        }
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

/// Calls `f` with the rows of the `[rows, cols]` weight `w` (any float dtype) in f32, and `cols`:
/// how a weight held in a tensor is handed to [`Q8::from_rows`] and [`Q4::from_rows`].
pub(crate) fn with_f32_rows<R>(
    w: &Tensor,
    f: impl FnOnce(&[&[f32]], usize) -> R,
) -> candle_core::Result<R> {
    let (n, cols) = w.dims2()?;
    let values: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let rows: Vec<&[f32]> = row_slices(&values, n, cols).collect();
    Ok(f(&rows, cols))
}

/// The `rows` rows of `cols` values each of the row-major `values` (also with `cols` = 0).
pub(crate) fn row_slices(
    values: &[f32],
    rows: usize,
    cols: usize,
) -> impl Iterator<Item = &[f32]> + '_ {
    (0..rows).map(move |r| &values[r * cols..(r + 1) * cols])
}

/// `v` as candle's `w * factor` leaves it (`v * factor + 0.0` in f32), which the packed forms
/// quantize for a weight with an output scale; a factor of 1 leaves it as it is.
#[inline(always)]
pub(crate) fn scaled(v: f32, factor: f32) -> f32 {
    if factor == 1.0 {
        v
    } else {
        v * factor + 0.0
    }
}

/// `v.round().clamp(-127.0, 127.0) as i8` (halves away from zero, NaN to 0) without `roundf`:
/// on the baseline x86-64 target `f32::round` is a call into libm, which took a sixth of a q8
/// load.
#[inline(always)]
fn round_to_i8(v: f32) -> i8 {
    let v = v.clamp(-127.0, 127.0);
    let whole = v as i32;
    // Exact: `v` and its integer part share sign and exponent range.
    let frac = v - whole as f32;
    (whole + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)) as i8
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

/// `x · wᵀ` for `x` `[m, in]` (f32, m ≤ [`MAX_ROWS`], on the CPU) and 4-bit weights, with
/// [`Kernel::chosen`]; `None` when `x` does not fit this path. The rows of `x` are quantized to
/// 8 bits per block of 32 on the way (see [`Q4`]).
pub fn matmul_t_q4(x: &Tensor, w: &Q4) -> candle_core::Result<Option<Tensor>> {
    matmul_t_q4_with(Kernel::chosen(), x, w)
}

/// [`matmul_t_q4`] with a given kernel.
pub fn matmul_t_q4_with(kernel: Kernel, x: &Tensor, w: &Q4) -> candle_core::Result<Option<Tensor>> {
    run(kernel, x, w.rows, w.cols, &Weights::Q4(w))
}

/// A weight matrix stored in fewer bits than a float (`--dtype q8`, `--dtype q4`).
#[derive(Debug, Clone)]
pub enum Packed {
    /// 8 bits a weight, a scale per row.
    Q8(Q8),
    /// 4 bits a weight, a scale per 32.
    Q4(Q4),
}

impl Packed {
    /// `x · wᵀ` on this path ([`matmul_t_q8`], [`matmul_t_q4`]); `None` when `x` does not fit.
    pub fn matmul_t(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self {
            Packed::Q8(w) => matmul_t_q8(x, w),
            Packed::Q4(w) => matmul_t_q4(x, w),
        }
    }

    /// The weight back in f32 `[rows, cols]`.
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Packed::Q8(w) => w.dequantize(device),
            Packed::Q4(w) => w.dequantize(device),
        }
    }
}

/// A matrix-vector kernel: what the CPU runs a generation step's products with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust the compiler vectorises for the baseline target: runs anywhere.
    Generic,
    /// Explicit AVX2 + FMA (x86-64 since 2013-2015).
    Avx2,
    /// Explicit AVX-512F and BW (Intel Xeon since Skylake-SP, AMD since Zen 4): twice the lanes.
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
                // BW for the 4-bit kernel's byte products; every CPU with AVX-512F but Xeon
                // Phi has it.
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                {
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

/// `x · wᵀ` for f32 `x` `[m, k]` on the CPU and f32 weight rows `w` `[n, k]` that candle does
/// not own (a memory-mapped checkpoint, see [`crate::model::load::MappedF32`]): few rows take
/// the matrix-vector path, more (a prompt, a teacher-forced pass) the `gemm` crate that candle's
/// own CPU matmul runs on, straight over `w`.
pub fn matmul_t_rows(x: &Tensor, w: &[f32], n: usize, k: usize) -> candle_core::Result<Tensor> {
    let (m, k2) = x.dims2()?;
    if k2 != k || w.len() != n * k || x.dtype() != DType::F32 || !x.device().is_cpu() {
        candle_core::bail!(
            "product of {:?} {:?} on {:?} with an f32 [{n}, {k}] weight held outside candle",
            x.dims(),
            x.dtype(),
            x.device()
        );
    }
    if let Some(y) = run(Kernel::chosen(), x, n, k, &Weights::F32(w))? {
        return Ok(y);
    }
    let x = x.contiguous()?;
    let (xs_storage, xs_layout) = x.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(xs)) = &*xs_storage else {
        candle_core::bail!("f32 rows on the CPU expected");
    };
    let xs = window(xs, xs_layout, m * k);
    let mut out = vec![0f32; m * n];
    if m > 0 && n > 0 {
        // SAFETY: `out` is [m, n] row-major, `xs` [m, k] row-major and `w` [n, k] row-major
        // read as the [k, n] right-hand side (column stride k); every extent was checked above.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                xs.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
    Tensor::from_vec(out, (m, n), &Device::Cpu)
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
    // 4-bit products, and 8-bit ones by `vpdpbusd`, take their input rows in 8 bits, quantized
    // once here for every task.
    let bytes = matches!(weights, Weights::Q8(..)) && q8_bytes(kernel);
    let qx = match weights {
        Weights::Q4(w) => QuantizedRows::new(xs, m, k, w.padded_cols(), NIBBLE_OFFSET),
        Weights::Q8(..) if bytes => QuantizedRows::new(xs, m, k, q4::padded_cols(k), BYTE_OFFSET),
        _ => QuantizedRows::default(),
    };
    // bf16 products by `vdpbf16ps` take their input rows in bf16, rounded once here.
    let xb: Option<Vec<half::bf16>> = match weights {
        Weights::Bf16(_) if bf16_dot(kernel) => {
            Some(xs.iter().map(|&v| half::bf16::from_f32(v)).collect())
        }
        _ => None,
    };
    let inputs = Inputs {
        xs,
        m,
        xb: xb.as_deref(),
        qx: &qx,
        q8_bytes: bytes,
    };
    // Output is [m, n]; tasks own disjoint column ranges, so compute into a transposed [n, m]
    // buffer (contiguous per task) and transpose at the end.
    let mut out_t = vec![0f32; n * m];
    let per_task = rows_per_task(n);
    out_t
        .par_chunks_mut(per_task * m)
        .enumerate()
        // SAFETY: checked above that the CPU runs the kernel.
        .for_each(|(task, chunk)| unsafe {
            row_products(kernel, weights, &inputs, k, task * per_task, chunk)
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

/// A product's input rows as each kernel takes them: in f32, and where a kernel wants them so,
/// rounded to bf16 (`xb`, for `vdpbf16ps`) or quantized to 8 bits (`qx`, for 4-bit weights, and
/// for 8-bit ones when `q8_bytes`).
struct Inputs<'a> {
    xs: &'a [f32],
    m: usize,
    xb: Option<&'a [half::bf16]>,
    qx: &'a QuantizedRows,
    q8_bytes: bool,
}

/// The products of weight rows `first..first + dst.len() / m` with every input row, into `dst`
/// (`[row][input]`): groups of rows at once where the kernel has a grouped form (several
/// streams from memory in flight, independent sums for the FMA units), then one row at a time.
///
/// # Safety
/// The CPU must run `kernel` (see [`Kernel::available`]).
unsafe fn row_products(
    kernel: Kernel,
    weights: &Weights,
    x: &Inputs,
    k: usize,
    first: usize,
    dst: &mut [f32],
) {
    let (xs, m, xb, qx) = (x.xs, x.m, x.xb, x.qx);
    let rows = dst.len() / m;
    let mut r = 0;
    #[cfg(target_arch = "x86_64")]
    if let Some(g) = x86::group_size(kernel, weights, m) {
        while r + g <= rows {
            let j = first + r;
            let dst = &mut dst[r * m..(r + g) * m];
            let span = j * k..(j + g) * k;
            let wide = kernel == Kernel::Avx512;
            // SAFETY: the caller says the CPU runs the kernel, and `group_size` groups only
            // what that kernel has a grouped form for.
            unsafe {
                match weights {
                    Weights::F32(w) if wide => x86::dots_group_avx512(&w[span], xs, k, dst),
                    Weights::F32(w) => x86::dots_group_avx2(&w[span], xs, k, dst),
                    Weights::Bf16(w) => match xb {
                        Some(xb) => x86::dots_group_bf16_dot(&w[span], xb, k, dst),
                        None if wide => x86::dots_group_bf16_avx512(&w[span], xs, k, dst),
                        None => x86::dots_group_bf16_avx2(&w[span], xs, k, dst),
                    },
                    Weights::Q8(w, scales) => {
                        if x.q8_bytes {
                            x86::dots_group_q8_vnni(&w[span], k, qx, dst);
                        } else if wide {
                            x86::dots_group_q8_avx512(&w[span], xs, k, dst);
                        } else {
                            x86::dots_group_q8_avx2(&w[span], xs, k, dst);
                        }
                        scale_rows(dst, &scales[j..j + g], m);
                    }
                    Weights::Q4(w) => {
                        let (data, scales) = q4_rows(w, j, g);
                        x86::dots_group_q4_avx512(data, scales, qx, dst);
                    }
                }
            }
            r += g;
        }
    }
    for (r, dst) in dst.chunks_mut(m).enumerate().skip(r) {
        let j = first + r;
        match weights {
            Weights::F32(w) => dots(kernel, &w[j * k..(j + 1) * k], xs, k, dst),
            Weights::Bf16(w) => dots_bf16(kernel, &w[j * k..(j + 1) * k], xs, xb, k, dst),
            Weights::Q8(w, scales) => {
                let qx = x.q8_bytes.then_some(qx);
                dots_q8(kernel, &w[j * k..(j + 1) * k], xs, qx, k, dst);
                scale_rows(dst, &scales[j..j + 1], m);
            }
            Weights::Q4(w) => {
                let (data, scales) = q4_rows(w, j, 1);
                dots_q4(kernel, data, scales, qx, dst);
            }
        }
    }
}

/// The nibbles and scales of `count` 4-bit weight rows from row `first`.
fn q4_rows(w: &Q4, first: usize, count: usize) -> (&[u8], &[f32]) {
    let kp = w.padded_cols();
    let (bytes, blocks) = (kp / 2, kp / Q4_BLOCK);
    (
        &w.data[first * bytes..(first + count) * bytes],
        &w.scales[first * blocks..(first + count) * blocks],
    )
}

fn window<'a, T>(v: &'a [T], layout: &Layout, len: usize) -> &'a [T] {
    let start = layout.start_offset();
    &v[start..start + len]
}

/// What an attention cache holds that [`rows_dot`] and [`weighted_rows`] read: f32, or bf16
/// (half the bytes a step reads from a long cache), widened to f32 as it is read.
pub(crate) trait CacheElement: Copy {
    /// `rows` as weight storage, for the kernels.
    fn as_weights(rows: &[Self]) -> Weights<'_>;
    /// One element in f32.
    fn to_f32(self) -> f32;
}

impl CacheElement for f32 {
    fn as_weights(rows: &[f32]) -> Weights<'_> {
        Weights::F32(rows)
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl CacheElement for half::bf16 {
    fn as_weights(rows: &[half::bf16]) -> Weights<'_> {
        Weights::Bf16(rows)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// `out[j] = w[j * k..(j + 1) * k] · x` for every `j < out.len()`, on this thread, with
/// [`Kernel::chosen`]: one attention head's scores for a generation step, its keys the rows of
/// the cache. The grouped kernels take several rows at once, as in a weight product; a dot
/// product of 64 summed one by one is a chain of 64 dependent additions.
pub(crate) fn rows_dot<T: CacheElement>(w: &[T], x: &[f32], k: usize, out: &mut [f32]) {
    rows_dot_with(Kernel::chosen(), w, x, k, out)
}

/// [`rows_dot`] with a kernel the CPU runs.
fn rows_dot_with<T: CacheElement>(kernel: Kernel, w: &[T], x: &[f32], k: usize, out: &mut [f32]) {
    let n = out.len();
    assert!(
        w.len() >= n * k && x.len() >= k,
        "rows_dot: {n} rows of {k}"
    );
    assert!(Kernel::available().contains(&kernel));
    let qx = QuantizedRows::default();
    let inputs = Inputs {
        xs: &x[..k],
        m: 1,
        xb: None,
        qx: &qx,
        q8_bytes: false,
    };
    // SAFETY: checked above that the CPU runs the kernel.
    unsafe { row_products(kernel, &T::as_weights(&w[..n * k]), &inputs, k, 0, out) }
}

/// `out[c] += Σ_j p[j] · v[j * stride + c]` for every column `c < out.len()`, on this thread,
/// with [`Kernel::chosen`]: one attention head's weighted sum of its values (the rows of the
/// cache, `stride` apart). The vector kernels keep a run of output columns in registers over
/// all rows.
pub(crate) fn weighted_rows<T: CacheElement>(p: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
    weighted_rows_with(Kernel::chosen(), p, v, stride, out)
}

/// [`weighted_rows`] with a kernel the CPU runs.
fn weighted_rows_with<T: CacheElement>(
    kernel: Kernel,
    p: &[f32],
    v: &[T],
    stride: usize,
    out: &mut [f32],
) {
    let d = out.len();
    if p.is_empty() || d == 0 {
        return;
    }
    assert!(
        stride >= d && v.len() >= (p.len() - 1) * stride + d,
        "weighted_rows: {} rows of {d}, {stride} apart, in {}",
        p.len(),
        v.len()
    );
    assert!(Kernel::available().contains(&kernel));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel is one the CPU runs, and `v` holds every row (checked above).
    unsafe {
        match (kernel, T::as_weights(v)) {
            (Kernel::Avx512, Weights::F32(v)) => return x86::weighted_f32_512(p, v, stride, out),
            (Kernel::Avx512, Weights::Bf16(v)) => return x86::weighted_bf16_512(p, v, stride, out),
            (Kernel::Avx2, Weights::F32(v)) => return x86::weighted_f32_256(p, v, stride, out),
            (Kernel::Avx2, Weights::Bf16(v)) => return x86::weighted_bf16_256(p, v, stride, out),
            _ => {}
        }
    }
    for (j, &w) in p.iter().enumerate() {
        let row = &v[j * stride..j * stride + d];
        out.iter_mut()
            .zip(row)
            .for_each(|(o, x)| *o += w * x.to_f32());
    }
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

/// [`dots`] for bf16 weights, widened to f32 on the fly, or with `xb` (the input rows in bf16,
/// given where [`bf16_dot`] holds) multiplied in bf16.
#[inline]
fn dots_bf16(
    kernel: Kernel,
    w: &[half::bf16],
    xs: &[f32],
    xb: Option<&[half::bf16]>,
    k: usize,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    match (kernel, xb) {
        // SAFETY: `run` gives `xb` only where `bf16_dot` holds.
        (_, Some(xb)) => return unsafe { x86::dots_bf16_dot(w, xb, k, dst) },
        // SAFETY: `run` checked that the CPU runs the kernel.
        (Kernel::Avx512, None) => return unsafe { x86::dots_bf16_avx512(w, xs, k, dst) },
        (Kernel::Avx2, None) => return unsafe { x86::dots_bf16_avx2(w, xs, k, dst) },
        (Kernel::Generic, None) => {}
    }
    let _ = (kernel, xb);
    dots_bf16_generic(w, xs, k, dst)
}

/// Whether bf16 products with `kernel` multiply in bf16 (`vdpbf16ps`, see `x86::bf16_dot`).
fn bf16_dot(kernel: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    return kernel == Kernel::Avx512 && x86::bf16_dot();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        false
    }
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

/// [`dots`] for 8-bit weights, before their row's scale: widened to f32, or with `qx` (the
/// input rows in 8 bits, given where [`q8_bytes`] holds) multiplied as bytes.
#[inline]
fn dots_q8(
    kernel: Kernel,
    w: &[i8],
    xs: &[f32],
    qx: Option<&QuantizedRows>,
    k: usize,
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    match (kernel, qx) {
        // SAFETY: `run` gives `qx` only where `q8_bytes` holds.
        (_, Some(qx)) => return unsafe { x86::dots_q8_vnni(w, k, qx, dst) },
        // SAFETY: `run` checked that the CPU runs the kernel.
        (Kernel::Avx512, None) => return unsafe { x86::dots_q8_avx512(w, xs, k, dst) },
        (Kernel::Avx2, None) => return unsafe { x86::dots_q8_avx2(w, xs, k, dst) },
        (Kernel::Generic, None) => {}
    }
    let _ = (kernel, qx);
    dots_generic(w, xs, k, dst)
}

/// Whether 8-bit products with `kernel` multiply bytes by bytes (AVX-512 VNNI, asked for: see
/// `x86::q8_vnni`), the input rows quantized to 8 bits per block of 32.
fn q8_bytes(kernel: Kernel) -> bool {
    #[cfg(target_arch = "x86_64")]
    return kernel == Kernel::Avx512 && x86::q8_vnni();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = kernel;
        false
    }
}

/// [`dots`] for one 4-bit weight row.
#[inline]
fn dots_q4(kernel: Kernel, w: &[u8], scales: &[f32], x: &QuantizedRows, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: `run` checked that the CPU runs the kernel.
        Kernel::Avx512 => return unsafe { x86::dots_q4_avx512(w, scales, x, dst) },
        Kernel::Avx2 => return unsafe { x86::dots_q4_avx2(w, scales, x, dst) },
        Kernel::Generic => {}
    }
    let _ = kernel;
    q4::dots_generic(w, scales, x, dst)
}

/// The explicit x86-64 kernels. Each streams its weight rows once, a vector at a time, widening
/// bf16 or 8-bit weights to f32 in registers (or multiplying bf16 pairs, with AVX-512 BF16),
/// against every input row, whose accumulators stay
/// in registers (row counts are const parameters); the tail past the last whole vector is summed
/// in scalar code. For 1 or 2 input rows (a generation step) the kernels take a group of weight
/// rows at once, prefetching each row ahead of its reads (one row at a time for the rows a group
/// leaves over, for more inputs, and for AVX2's 4-bit kernel).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::QuantizedRows;
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

    /// One grouped kernel per weight type and vector width (`512:` AVX-512, `256:` AVX2): `R`
    /// weight rows (one after another in `w`) against `M` input rows, `dst` `[row][input]`,
    /// each row prefetched [`PREFETCH`] bytes ahead once per cache line. A macro rather than a
    /// closure for the load: a closure is not compiled with the kernel's target features, so its
    /// intrinsics would be calls instead of single instructions.
    macro_rules! grouped {
        ($name:ident, $features:literal, $lanes:literal, $zero:ident, $loadx:ident, $fma:ident,
         $reduce:ident, $t:ty, $load:ident, $to_f32:expr, $xt:ty, $xzero:ident, $x_to_f32:expr) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize, const M: usize>(
                w: &[$t],
                xs: &[$xt],
                k: usize,
                dst: &mut [f32],
            ) {
                let full = k - k % $lanes;
                let mut acc = [[$zero(); M]; R];
                let (wp, xp) = (w.as_ptr(), xs.as_ptr());
                let mut p = 0;
                let line = 64 / std::mem::size_of::<$t>();
                while p < full {
                    let mut xv = [$xzero(); M];
                    for (i, v) in xv.iter_mut().enumerate() {
                        *v = $loadx(xp.add(i * k + p));
                    }
                    if p % line == 0 {
                        // A hint only: past the end of the weights it reads nothing and
                        // cannot fault.
                        for r in 0..R {
                            let at =
                                wp.wrapping_add(r * k + p + PREFETCH / std::mem::size_of::<$t>());
                            _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                        }
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = $load(wp.add(r * k + p));
                        for i in 0..M {
                            a[i] = $fma(wv, xv[i], a[i]);
                        }
                    }
                    p += $lanes;
                }
                let (to_f32, x_to_f32) = ($to_f32, $x_to_f32);
                for r in 0..R {
                    for i in 0..M {
                        let tail: f32 = (full..k)
                            .map(|q| to_f32(w[r * k + q]) * x_to_f32(xs[i * k + q]))
                            .sum();
                        dst[r * M + i] = $reduce(acc[r][i]) + tail;
                    }
                }
            }
        };
        // The AVX-512 form: 16 lanes.
        (512: $name:ident, $t:ty, $load:ident, $to_f32:expr) => {
            grouped!(
                $name,
                "avx512f",
                16,
                _mm512_setzero_ps,
                _mm512_loadu_ps,
                _mm512_fmadd_ps,
                _mm512_reduce_add_ps,
                $t,
                $load,
                $to_f32,
                f32,
                _mm512_setzero_ps,
                |v: f32| v
            );
        };
        // AVX-512 BF16: bf16 weights against input rows rounded to bf16, 32 lanes a step, each
        // `vdpbf16ps` multiplying 32 pairs and adding them into 16 f32 sums.
        (512bf16: $name:ident) => {
            grouped!(
                $name,
                "avx512f,avx512bf16",
                32,
                _mm512_setzero_ps,
                load32_bh,
                dot32_bh,
                _mm512_reduce_add_ps,
                half::bf16,
                load32_bh,
                |v: half::bf16| v.to_f32(),
                half::bf16,
                zero_bh,
                |v: half::bf16| v.to_f32()
            );
        };
        // The AVX2 form: 8 lanes.
        (256: $name:ident, $t:ty, $load:ident, $to_f32:expr) => {
            grouped!(
                $name,
                "avx2,fma",
                8,
                _mm256_setzero_ps,
                _mm256_loadu_ps,
                _mm256_fmadd_ps,
                hsum256,
                $t,
                $load,
                $to_f32,
                f32,
                _mm256_setzero_ps,
                |v: f32| v
            );
        };
    }
    grouped!(512: group_f32_512, f32, _mm512_loadu_ps, |v: f32| v);
    grouped!(512: group_bf16_512, half::bf16, widen16, |v: half::bf16| v.to_f32());
    grouped!(512: group_q8_512, i8, widen16_i8, |v: i8| f32::from(v));
    grouped!(512bf16: group_bf16_dot);

    /// Whether bf16 products use AVX-512 BF16's `vdpbf16ps` (Intel since Cooper Lake and
    /// Sapphire Rapids, AMD since Zen 4): one instruction multiplies 32 weights by the input
    /// rounded to bf16 and sums them into f32, where widening takes a shift and a
    /// multiply-add per 16. The input rows are rounded to bf16 once per product, as
    /// transformers' bf16 model rounds its activations. Tests clear [`USE_BF16_DOT`] to check
    /// the widening path that CPUs without it take; `BATON_BF16_DOT=0` makes a process widen
    /// (for benchmarks).
    pub fn bf16_dot() -> bool {
        static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        USE_BF16_DOT.load(std::sync::atomic::Ordering::Relaxed)
            && *WANTED.get_or_init(|| {
                std::is_x86_feature_detected!("avx512bf16")
                    && std::env::var("BATON_BF16_DOT").as_deref() != Ok("0")
            })
    }

    /// See [`bf16_dot`].
    pub static USE_BF16_DOT: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(true);

    /// 32 bf16 values from `src` as one vector of pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn load32_bh(src: *const half::bf16) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(src as *const _))
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn zero_bh() -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512())
    }

    /// `acc` plus the 32 products of `w` and `x`, summed in pairs into its 16 lanes.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn dot32_bh(w: __m512bh, x: __m512bh, acc: __m512) -> __m512 {
        _mm512_dpbf16_ps(acc, w, x)
    }

    /// One bf16 weight row against every input row (in bf16), with `vdpbf16ps`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dots_bf16_dot(w: &[half::bf16], xs: &[half::bf16], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), one_bf16_dot, w, xs, k, dst)
    }

    /// 16 signed bytes from `src`, as f32.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn widen16_i8(src: *const i8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(src as *const __m128i)))
    }

    /// One 8-bit weight row against every input row, before its scale.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dots_q8_avx512(w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), one_q8_512, w, xs, k, dst)
    }

    /// One weight row against `M` input rows: the grouped kernel with a group of one.
    macro_rules! one_row_512 {
        ($features:literal, $($name:ident: $t:ty, $xt:ty => $group:ident;)*) => {$(
            #[target_feature(enable = $features)]
            unsafe fn $name<const M: usize>(w: &[$t], xs: &[$xt], k: usize, dst: &mut [f32]) {
                $group::<1, M>(w, xs, k, dst)
            }
        )*};
    }
    one_row_512!("avx512f",
        one_f32_512: f32, f32 => group_f32_512;
        one_bf16_512: half::bf16, f32 => group_bf16_512;
        one_q8_512: i8, f32 => group_q8_512;
    );
    one_row_512!("avx512f,avx512bf16",
        one_bf16_dot: half::bf16, half::bf16 => group_bf16_dot;
    );

    /// One 8-bit weight row against every input row, before its scale.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_q8_avx2(w: &[i8], xs: &[f32], k: usize, dst: &mut [f32]) {
        by_rows!(dst.len(), q8_256, w, xs, k, dst)
    }

    /// Weight rows streamed at once by the grouped kernels: several streams from memory in
    /// flight instead of one (measured: f32 products of 2 rows went from 14-16 to 22-25 GB/s
    /// on a 2-core Xeon). bf16 rows are half as long, so twice as many make the same bytes.
    pub const GROUP_F32: usize = 4;
    /// See [`GROUP_F32`].
    pub const GROUP_BF16: usize = 8;

    /// How many weight rows a task streams at once with `kernel` for `m` input rows: `None`
    /// where one row at a time is the kernel's only form (more than 2 inputs, the generic
    /// kernel, 4-bit weights under AVX2, whose byte products already keep the units busy:
    /// groups of 2 and 4 rows with the inputs loaded once per group were slower, 37-47 and
    /// 31-35 steps/s against 44-50 in q4 renders on a 2-core AMD EPYC held to AVX2).
    pub fn group_size(kernel: super::Kernel, weights: &super::Weights, m: usize) -> Option<usize> {
        use super::{Kernel, Weights};
        if m > 2 {
            return None;
        }
        match (kernel, weights) {
            (Kernel::Avx512, Weights::F32(_)) => Some(GROUP_F32),
            (Kernel::Avx512, Weights::Bf16(_) | Weights::Q8(..)) => Some(GROUP_BF16),
            (Kernel::Avx512, Weights::Q4(_)) => Some(GROUP_Q4),
            (Kernel::Avx2, Weights::Q4(_)) | (Kernel::Generic, _) => None,
            (Kernel::Avx2, _) => Some(GROUP_256),
        }
    }

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

    /// Weight rows the AVX2 grouped kernels stream at once, whatever the weight type: 4 rows
    /// against 2 inputs keep 8 accumulators (enough independent sums to hide the FMA latency)
    /// and the 2 input vectors in 11 of the 16 registers. One row at a time left bf16 and
    /// 8-bit products bound by the single accumulator chain per input (bench_gemv, 2 rows,
    /// AMD EPYC: bf16 20 GB/s, 8-bit 13 GB/s, against 35 and 28 for the AVX-512 kernels).
    pub const GROUP_256: usize = 4;
    /// Bytes ahead of each weight row's read that the grouped f32, bf16 and 8-bit kernels ask
    /// the cache for, once per cache line: the rows are separate streams, more than the
    /// hardware prefetcher follows at full speed. Measured on a 2-core AMD EPYC (renders of
    /// musicgen-small-shaped weights, old and new alternating): 8-bit 29-31 -> 46-50 steps/s
    /// with the AVX2 kernel and 43-53 -> 52-56 with AVX-512; bf16 and f32 within the noise or a
    /// little faster. Of 0, 512, 1024 and 2048 bytes (same renders, 2 rounds each), 1024 and
    /// 2048 were best and equal within the noise; 0 (the current line only) the slowest.
    const PREFETCH: usize = 1024;

    grouped!(256: group_f32_256, f32, _mm256_loadu_ps, |v: f32| v);
    grouped!(256: group_bf16_256, half::bf16, widen8, |v: half::bf16| v.to_f32());
    grouped!(256: group_q8_256, i8, widen8_i8, |v: i8| f32::from(v));

    /// The entry points of the grouped kernels: `$group` weight rows (one after another in `w`)
    /// against 1 or 2 input rows, `dst` `[row][input]` (8-bit rows before their scales).
    macro_rules! group_entries {
        ($features:literal, $($name:ident: $t:ty, $xt:ty => $kernel:ident, $group:ident;)*) => {$(
            #[doc = concat!("`", stringify!($kernel), "` over [`", stringify!($group), "`] rows.")]
            #[target_feature(enable = $features)]
            pub unsafe fn $name(w: &[$t], xs: &[$xt], k: usize, dst: &mut [f32]) {
                if dst.len() == $group {
                    $kernel::<$group, 1>(w, xs, k, dst)
                } else {
                    $kernel::<$group, 2>(w, xs, k, dst)
                }
            }
        )*};
    }
    group_entries!("avx512f",
        dots_group_avx512: f32, f32 => group_f32_512, GROUP_F32;
        dots_group_bf16_avx512: half::bf16, f32 => group_bf16_512, GROUP_BF16;
        dots_group_q8_avx512: i8, f32 => group_q8_512, GROUP_BF16;
    );
    group_entries!("avx512f,avx512bf16",
        dots_group_bf16_dot: half::bf16, half::bf16 => group_bf16_dot, GROUP_BF16;
    );
    group_entries!("avx2,fma",
        dots_group_avx2: f32, f32 => group_f32_256, GROUP_256;
        dots_group_bf16_avx2: half::bf16, f32 => group_bf16_256, GROUP_256;
        dots_group_q8_avx2: i8, f32 => group_q8_256, GROUP_256;
    );

    /// 4-bit weight rows streamed at once by the grouped kernel. 8 rows with 2 inputs need more
    /// than the 32 vector registers (the compiler spilled accumulators to the stack); 4 with
    /// [`PREFETCH_Q4`] measured best of {4, 8} x {0, 512} (bench_gemv on a busy 2-core Xeon,
    /// noisy: 9-11 GB/s against 5-6 for 8 rows without prefetching).
    pub const GROUP_Q4: usize = 4;
    /// Bytes ahead of each weight row's read that the 4-bit kernel asks the cache for: profiles
    /// put its time on the instructions waiting for weight loads, each row a separate stream.
    const PREFETCH_Q4: usize = 512;

    /// One 4-bit weight row against every input row: per block, the 16 bytes split into 32
    /// nibbles in order, `maddubs` against the 32 input bytes, pairs summed to 8 lanes, the
    /// nibbles' +8 taken out (see [`QuantizedRows`]), scaled in f32.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots_q4_avx2(w: &[u8], scales: &[f32], x: &QuantizedRows, dst: &mut [f32]) {
        by_rows!(dst.len(), q4_256, w, scales, x, dst)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_256<const M: usize>(w: &[u8], scales: &[f32], x: &QuantizedRows, dst: &mut [f32]) {
        let nb = x.blocks();
        debug_assert!(w.len() == nb * 16 && scales.len() == nb && x.q.len() >= M * x.padded);
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); M];
        let (wp, xq, xs) = (w.as_ptr(), x.q.as_ptr(), x.scales.as_ptr());
        let sums = x.sums.as_ptr();
        for b in 0..nb {
            let raw = _mm_loadu_si128(wp.add(b * 16) as *const __m128i);
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            let wv = _mm256_set_m128i(hi, lo);
            let ws = *scales.get_unchecked(b);
            for (i, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_si256(xq.add(i * x.padded + b * 32) as *const __m256i);
                // Nibbles (0..=15) times bytes (-127..=127): pair sums fit in i16.
                let s = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones);
                let off = _mm256_loadu_si256(sums.add((i * x.padded + b * 32) / 4) as *const _);
                let s = _mm256_sub_epi32(s, off);
                let f = _mm256_set1_ps(ws * *xs.add(i * nb + b));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), f, *a);
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = hsum256(*a);
        }
    }

    /// Whether the byte kernels use AVX-512 VNNI (Intel since Cascade Lake, AMD since Zen 4),
    /// whose `vpdpbusd` does the byte products, their sums in 4s and the offsets' removal in
    /// one instruction: 4-bit products take one instead of three (the same integers). Tests
    /// clear [`USE_VNNI`] to check the path CPUs without it take; `BATON_VNNI=0` makes a
    /// process do without it (for benchmarks).
    pub fn vnni() -> bool {
        static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        USE_VNNI.load(std::sync::atomic::Ordering::Relaxed)
            && *WANTED.get_or_init(|| {
                std::is_x86_feature_detected!("avx512vnni")
                    && std::env::var("BATON_VNNI").as_deref() != Ok("0")
            })
    }

    /// See [`vnni`].
    pub static USE_VNNI: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

    /// Whether 8-bit products multiply bytes by bytes with VNNI ([`group_q8_vnni`], the input
    /// rows quantized to 8 bits per block of 32) instead of widening every weight to f32:
    /// only when asked for, with `BATON_Q8_VNNI=1` (or [`USE_Q8_VNNI`], for the tests). It
    /// takes fewer than half the vector operations (with the weights in the cache, 2 input
    /// rows: 53-71 GB/s against 45-66; 1 row: 95-110 against 52-88), but on the one CPU it
    /// has been measured on, a 2-core AMD EPYC (Zen 5) whose widening kernel already reads
    /// near memory's speed, it gained nothing from memory and generation was 4-5 % slower
    /// (renders: 57.6 against 60.4 steps/s, medians of 8). CPUs whose 8-bit products run below
    /// memory's speed (a 2-core Xeon read 8-16 of its 26-28 GB/s) are where it could pay;
    /// measure there (`bench_gemv`, `bench_engine.sh`) before making it the default.
    pub fn q8_vnni() -> bool {
        static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        vnni()
            && (USE_Q8_VNNI.load(std::sync::atomic::Ordering::Relaxed)
                || *WANTED.get_or_init(|| std::env::var("BATON_Q8_VNNI").as_deref() == Ok("1")))
    }

    /// See [`q8_vnni`].
    pub static USE_Q8_VNNI: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// [`GROUP_Q4`] 4-bit weight rows against 1 or 2 input rows.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dots_group_q4_avx512(
        w: &[u8],
        scales: &[f32],
        x: &QuantizedRows,
        dst: &mut [f32],
    ) {
        match (dst.len() == GROUP_Q4, vnni()) {
            (true, true) => group_q4_vnni::<GROUP_Q4, 1>(w, scales, x, dst),
            (true, false) => group_q4_512::<GROUP_Q4, 1>(w, scales, x, dst),
            (false, true) => group_q4_vnni::<GROUP_Q4, 2>(w, scales, x, dst),
            (false, false) => group_q4_512::<GROUP_Q4, 2>(w, scales, x, dst),
        }
    }

    /// One 4-bit weight row against every input row.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn dots_q4_avx512(w: &[u8], scales: &[f32], x: &QuantizedRows, dst: &mut [f32]) {
        if vnni() {
            by_rows!(dst.len(), one_q4_vnni, w, scales, x, dst)
        } else {
            by_rows!(dst.len(), one_q4_512, w, scales, x, dst)
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn one_q4_512<const M: usize>(
        w: &[u8],
        scales: &[f32],
        x: &QuantizedRows,
        dst: &mut [f32],
    ) {
        group_q4_512::<1, M>(w, scales, x, dst)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn one_q4_vnni<const M: usize>(
        w: &[u8],
        scales: &[f32],
        x: &QuantizedRows,
        dst: &mut [f32],
    ) {
        group_q4_vnni::<1, M>(w, scales, x, dst)
    }

    /// Two consecutive floats at `p` spread to `[p[0] x 8, p[1] x 8]`: one scale per block
    /// for the 8 lanes that block's sums land in.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn spread2(p: *const f32, idx: __m512i) -> __m512 {
        let two = _mm_castpd_ps(_mm_load_sd(p as *const f64));
        _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(two))
    }

    /// Nibbles `w` times bytes `x`, summed in 4s, minus `off` (AVX-512BW: three instructions;
    /// nibbles (0..=15) times bytes (-127..=127) make pair sums that fit in i16).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn dot4_bw(w: __m512i, x: __m512i, off: __m512i) -> __m512i {
        let s = _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), _mm512_set1_epi16(1));
        _mm512_sub_epi32(s, off)
    }

    /// [`dot4_bw`] in one instruction; takes `-off`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot4_vnni(w: __m512i, x: __m512i, neg_off: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(neg_off, w, x)
    }

    /// `R` 4-bit weight rows (one after another in `w`, scales likewise) against `M` input rows,
    /// `dst` `[row][input]`, two blocks (64 weights, 32 bytes) a step: the 32 bytes are laid
    /// out as `[block 0, block 0, block 1, block 1]` in the four 128-bit lanes, the second copy
    /// of each shifted down a nibble, so the masked nibbles are the 64 weights in order. One
    /// kernel per byte product (`$dot`; `$negate` says whether it takes the offsets negated).
    macro_rules! group_q4 {
        ($name:ident, $features:literal, $dot:ident, $negate:literal) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize, const M: usize>(
                w: &[u8],
                scales: &[f32],
                x: &QuantizedRows,
                dst: &mut [f32],
            ) {
                let nb = x.blocks();
                let row_bytes = nb * 16;
                debug_assert!(nb.is_multiple_of(2));
                debug_assert!(w.len() == R * row_bytes && scales.len() == R * nb);
                debug_assert!(x.q.len() >= M * x.padded && dst.len() == R * M);
                let mask = _mm512_set1_epi8(0x0F);
                let high = 0x0004_0004_0004_0004;
                let shifts = _mm512_set_epi64(high, high, 0, 0, high, high, 0, 0);
                let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
                let mut acc = [[_mm512_setzero_ps(); M]; R];
                let (wp, sp) = (w.as_ptr(), scales.as_ptr());
                let (xq, xs, sums) = (x.q.as_ptr(), x.scales.as_ptr(), x.sums.as_ptr());
                let mut b = 0;
                while b < nb {
                    let mut xv = [_mm512_setzero_si512(); M];
                    let mut xsc = [_mm512_setzero_ps(); M];
                    let mut off = [_mm512_setzero_si512(); M];
                    for i in 0..M {
                        xv[i] = _mm512_loadu_si512(xq.add(i * x.padded + b * 32) as *const _);
                        xsc[i] = spread2(xs.add(i * nb + b), idx);
                        let o =
                            _mm512_loadu_si512(sums.add((i * x.padded + b * 32) / 4) as *const _);
                        off[i] = if $negate {
                            _mm512_sub_epi32(_mm512_setzero_si512(), o)
                        } else {
                            o
                        };
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let at = wp.add(r * row_bytes + b * 16);
                        // A hint only: past the end of the weights it reads nothing and cannot
                        // fault.
                        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH_Q4) as *const i8);
                        let raw = _mm256_loadu_si256(at as *const __m256i);
                        let wide = _mm512_castsi256_si512(raw);
                        let wide = _mm512_shuffle_i64x2::<0x50>(wide, wide);
                        let wv = _mm512_and_si512(_mm512_srlv_epi16(wide, shifts), mask);
                        let ws = spread2(sp.add(r * nb + b), idx);
                        for i in 0..M {
                            let s = $dot(wv, xv[i], off[i]);
                            let f = _mm512_mul_ps(ws, xsc[i]);
                            a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, a[i]);
                        }
                    }
                    b += 2;
                }
                for r in 0..R {
                    for i in 0..M {
                        dst[r * M + i] = _mm512_reduce_add_ps(acc[r][i]);
                    }
                }
            }
        };
    }
    group_q4!(group_q4_512, "avx512f,avx512bw", dot4_bw, false);

    /// `out[c] += Σ_j p[j] · v[j * stride + c]` (see `super::weighted_rows`): `$vecs` vectors
    /// of `$lanes` columns at a time stay in registers over every row (`$t`, read by `$rows`
    /// as f32), then one vector at a time, then the columns past the last whole vector in
    /// scalar code. The caller checks that `v` holds every row.
    macro_rules! weighted {
        ($name:ident, $features:literal, $lanes:literal, $vecs:literal, $t:ty, $rows:ident,
         $load:ident, $store:ident, $set1:ident, $fma:ident) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(p: &[f32], v: &[$t], stride: usize, out: &mut [f32]) {
                let d = out.len();
                let (vp, op) = (v.as_ptr(), out.as_mut_ptr());
                let mut c = 0;
                while c + $vecs * $lanes <= d {
                    let mut acc = [$set1(0.0); $vecs];
                    for (t, a) in acc.iter_mut().enumerate() {
                        *a = $load(op.add(c + t * $lanes));
                    }
                    for (j, &w) in p.iter().enumerate() {
                        let (row, wv) = (vp.add(j * stride + c), $set1(w));
                        for (t, a) in acc.iter_mut().enumerate() {
                            *a = $fma(wv, $rows(row.add(t * $lanes)), *a);
                        }
                    }
                    for (t, a) in acc.iter().enumerate() {
                        $store(op.add(c + t * $lanes), *a);
                    }
                    c += $vecs * $lanes;
                }
                while c + $lanes <= d {
                    let mut acc = $load(op.add(c));
                    for (j, &w) in p.iter().enumerate() {
                        acc = $fma($set1(w), $rows(vp.add(j * stride + c)), acc);
                    }
                    $store(op.add(c), acc);
                    c += $lanes;
                }
                for (c, o) in out.iter_mut().enumerate().skip(c) {
                    *o += p
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * super::CacheElement::to_f32(v[j * stride + c]))
                        .sum::<f32>();
                }
            }
        };
        // 64 columns at a time (a head of musicgen's): 4 AVX-512 vectors.
        (512: $name:ident, $t:ty, $rows:ident) => {
            weighted!(
                $name,
                "avx512f",
                16,
                4,
                $t,
                $rows,
                _mm512_loadu_ps,
                _mm512_storeu_ps,
                _mm512_set1_ps,
                _mm512_fmadd_ps
            );
        };
        // 64 columns at a time: 8 AVX2 vectors.
        (256: $name:ident, $t:ty, $rows:ident) => {
            weighted!(
                $name,
                "avx2,fma",
                8,
                8,
                $t,
                $rows,
                _mm256_loadu_ps,
                _mm256_storeu_ps,
                _mm256_set1_ps,
                _mm256_fmadd_ps
            );
        };
    }
    weighted!(512: weighted_f32_512, f32, _mm512_loadu_ps);
    weighted!(512: weighted_bf16_512, half::bf16, widen16);
    weighted!(256: weighted_f32_256, f32, _mm256_loadu_ps);
    weighted!(256: weighted_bf16_256, half::bf16, widen8);

    /// Quantizes the whole blocks of one input row (`x`) to 8 bits into `q`, `scales` and
    /// `sums` as `QuantizedRows::new` does, 32 inputs at a time, and returns how many blocks
    /// it did (a partial last block is the caller's). The same bytes as the scalar code: the
    /// scale and its inverse are the same f32 operations, and `vcvtps2dq` rounds to the
    /// nearest, ties to even, as the scalar rounding does.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize_blocks(
        x: &[f32],
        q: &mut [i8],
        scales: &mut [f32],
        sums: &mut [i32],
        offset: i32,
    ) -> usize {
        let whole = x.len() / 32;
        debug_assert!(q.len() >= whole * 32 && scales.len() >= whole);
        debug_assert!(sums.len() >= whole * 32 / super::q4::LANE);
        let lim = _mm512_set1_epi32(127);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        let off = _mm256_set1_epi32(offset);
        for (b, scale_out) in scales[..whole].iter_mut().enumerate() {
            let p = x.as_ptr().add(b * 32);
            let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let max = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            let scale = max / 127.0;
            let inv = _mm512_set1_ps(if max > 0.0 { 1.0 / scale } else { 0.0 });
            let bytes = _mm256_set_m128i(to_bytes(hi, inv, lim), to_bytes(lo, inv, lim));
            _mm256_storeu_si256(q.as_mut_ptr().add(b * 32) as *mut __m256i, bytes);
            // Sums of 4: bytes times ones, pairs then pairs of pairs.
            let fours = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, bytes), ones16);
            let fours = _mm256_mullo_epi32(fours, off);
            _mm256_storeu_si256(sums.as_mut_ptr().add(b * 8) as *mut __m256i, fours);
            *scale_out = scale;
        }
        whole
    }

    /// `round(v · inv)` in `-lim..=lim` as 16 bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn to_bytes(v: __m512, inv: __m512, lim: __m512i) -> __m128i {
        let r = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv));
        let neg = _mm512_sub_epi32(_mm512_setzero_si512(), lim);
        _mm512_cvtepi32_epi8(_mm512_max_epi32(_mm512_min_epi32(r, lim), neg))
    }

    /// `R` 8-bit weight rows (one after another in `w`, `k` each) against `M` input rows in 8
    /// bits (`x`, with [`super::BYTE_OFFSET`]'s sums), `dst` `[row][input]`, before the rows'
    /// scales; 64 weights (two input blocks) a step. Each weight byte's sign bit is flipped
    /// (`w + 128`, unsigned, as `vpdpbusd` wants one side), and one `vpdpbusd` per input row
    /// multiplies the 64 bytes, sums them in 4s and starts from `-128 · Σ x`, which takes the
    /// flip back out exactly; the 16 sums are scaled by their blocks' input scales in f32. For 64
    /// weights and 2 input rows that is 8 vector operations, where widening takes 16 (4 loads
    /// with sign extension, 4 conversions, 8 multiply-adds). The step past the row's last whole 64 reads the weights
    /// under a mask (the inputs are zero past `k`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group_q8_vnni<const R: usize, const M: usize>(
        w: &[i8],
        k: usize,
        x: &QuantizedRows,
        dst: &mut [f32],
    ) {
        let nb = x.blocks();
        debug_assert!(w.len() == R * k && x.padded >= k && x.padded.is_multiple_of(64));
        debug_assert!(x.q.len() >= M * x.padded && dst.len() == R * M);
        let flip = _mm512_set1_epi8(i8::MIN);
        let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut acc = [[_mm512_setzero_ps(); M]; R];
        let (wp, xq, xs, sums) = (w.as_ptr(), x.q.as_ptr(), x.scales.as_ptr(), x.sums.as_ptr());
        // One step of 64 weights at `p`, each row's bytes read by `$load`.
        macro_rules! step {
            ($p:expr, $load:expr) => {{
                let p = $p;
                let mut xv = [_mm512_setzero_si512(); M];
                let mut xsc = [_mm512_setzero_ps(); M];
                let mut off = [_mm512_setzero_si512(); M];
                for i in 0..M {
                    xv[i] = _mm512_loadu_si512(xq.add(i * x.padded + p) as *const _);
                    xsc[i] = spread2(xs.add(i * nb + p / 32), idx);
                    let o = _mm512_loadu_si512(sums.add((i * x.padded + p) / 4) as *const _);
                    off[i] = _mm512_sub_epi32(_mm512_setzero_si512(), o);
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let at = wp.add(r * k + p);
                    // A hint only: past the end of the weights it reads nothing and cannot
                    // fault.
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH));
                    let wv = _mm512_xor_si512($load(at), flip);
                    for i in 0..M {
                        let s = _mm512_dpbusd_epi32(off[i], wv, xv[i]);
                        a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), xsc[i], a[i]);
                    }
                }
            }};
        }
        let whole = k - k % 64;
        let mut p = 0;
        while p < whole {
            step!(p, |at: *const i8| _mm512_loadu_si512(at as *const _));
            p += 64;
        }
        if whole < k {
            let mask: __mmask64 = (1 << (k - whole)) - 1;
            step!(whole, |at: *const i8| _mm512_maskz_loadu_epi8(mask, at));
        }
        for r in 0..R {
            for i in 0..M {
                dst[r * M + i] = _mm512_reduce_add_ps(acc[r][i]);
            }
        }
    }

    /// [`GROUP_BF16`] 8-bit weight rows against 1 or 2 input rows in 8 bits (see
    /// [`group_q8_vnni`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dots_group_q8_vnni(w: &[i8], k: usize, x: &QuantizedRows, dst: &mut [f32]) {
        if dst.len() == GROUP_BF16 {
            group_q8_vnni::<GROUP_BF16, 1>(w, k, x, dst)
        } else {
            group_q8_vnni::<GROUP_BF16, 2>(w, k, x, dst)
        }
    }

    /// One 8-bit weight row against every input row in 8 bits, before its scale.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dots_q8_vnni(w: &[i8], k: usize, x: &QuantizedRows, dst: &mut [f32]) {
        by_rows!(dst.len(), one_q8_vnni, w, k, x, dst)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn one_q8_vnni<const M: usize>(w: &[i8], k: usize, x: &QuantizedRows, dst: &mut [f32]) {
        group_q8_vnni::<1, M>(w, k, x, dst)
    }
    group_q4!(
        group_q4_vnni,
        "avx512f,avx512bw,avx512vnni",
        dot4_vnni,
        true
    );
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
        #[cfg(target_arch = "x86_64")]
        eprintln!("AVX-512 VNNI for 4-bit weights: {}", x86::vnni());
        #[cfg(target_arch = "x86_64")]
        eprintln!("AVX-512 BF16 for bf16 weights: {}", x86::bf16_dot());
        // A kernel the CPU lacks is refused, not run.
        #[cfg(target_arch = "x86_64")]
        if !all.contains(&Kernel::Avx512) {
            let x = Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap();
            let w = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
            assert!(matmul_t_with(Kernel::Avx512, &x, &w).is_err());
        }
    }

    #[test]
    fn bytes_round_as_f32_round_does() {
        let mut values = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            126.5,
            -126.5,
            127.0,
            127.49,
            128.0,
            -1e30,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.49999997,
            -0.49999997,
            f32::MIN_POSITIVE,
        ];
        // every tie and its neighbours, and a sweep of the range
        for k in -128..=128 {
            let tie = k as f32 + 0.5;
            values.extend([tie, tie.next_down(), tie.next_up()]);
        }
        values.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 0.0137));
        for v in values {
            let want = v.round().clamp(-127.0, 127.0) as i8;
            assert_eq!(round_to_i8(v), want, "{v:e}");
        }
    }

    #[test]
    fn q8_weights_round_within_half_a_step_and_every_kernel_agrees() {
        let dev = Device::Cpu;
        // Rows with a partial last 64 (37, 200, 7, 100: the byte kernel's masked step), in
        // groups and past them.
        for (m, n, k) in [
            (1, 70, 37),
            (2, 130, 1024),
            (3, 9, 200),
            (8, 66, 1024),
            (2, 5, 7),
            (2, 21, 100),
            (1, 16, 4096),
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
            // With VNNI's byte products (asked for) the inputs are in 8 bits too.
            let want_bytes = inputs_in_8_bits(&x, q4::padded_cols(k))
                .matmul(&back.t().unwrap())
                .unwrap();
            for bytes in q8_paths() {
                #[cfg(target_arch = "x86_64")]
                x86::USE_Q8_VNNI.store(bytes, std::sync::atomic::Ordering::Relaxed);
                for &kernel in Kernel::available() {
                    let got = matmul_t_q8_with(kernel, &x, &q).unwrap().unwrap();
                    let want = if q8_bytes(kernel) { &want_bytes } else { &want };
                    let d = max_abs_diff(&got, want);
                    assert!(
                        d < 1e-3,
                        "{kernel:?} (bytes {bytes}) q8 m{m} n{n} k{k}: {d}"
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            x86::USE_Q8_VNNI.store(false, std::sync::atomic::Ordering::Relaxed);
            // The two references differ, so one path cannot pass for the other, and by
            // little: the bound the 4-bit test sets for 8-bit inputs.
            let d = max_abs_diff(&want, &want_bytes);
            if k >= 1024 {
                assert!(d > 1e-3, "m{m} n{n} k{k}: {d}");
            }
            assert!(
                d < 0.04 * (k as f32).sqrt(),
                "8-bit inputs m{m} n{n} k{k}: {d}"
            );
        }
        // An all-zero row quantizes to zeros (scale 1, no division by zero).
        let zero = Q8::quantize(&Tensor::zeros((2, 8), DType::F32, &dev).unwrap()).unwrap();
        assert!(zero.data.iter().all(|&q| q == 0));
    }

    #[test]
    fn q4_weights_round_no_worse_than_q4_0_and_every_kernel_agrees() {
        let dev = Device::Cpu;
        // Row lengths with padding (37, 7, 200), one block pair and many; every row count,
        // and row counts that leave rows past the AVX-512 groups.
        for (m, n, k) in [
            (1, 70, 37),
            (2, 130, 1024),
            (1, 16, 4096),
            (3, 9, 200),
            (8, 66, 1024),
            (2, 5, 7),
            (2, 21, 96),
        ] {
            let x = Tensor::randn(0f32, 1., (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
            let q = Q4::quantize(&w).unwrap();
            let back = q.dequantize(&dev).unwrap();
            let (wv, bv): (Vec<f32>, Vec<f32>) = (
                w.flatten_all().unwrap().to_vec1().unwrap(),
                back.flatten_all().unwrap().to_vec1().unwrap(),
            );
            // Per block: no worse than GGML's Q4_0 rounding (scale m / -8, m the weight of
            // largest magnitude) in squared error, and no weight off by more than two of its
            // steps.
            for (r, (wr, br)) in wv.chunks(k).zip(bv.chunks(k)).enumerate() {
                for (wb, bb) in wr.chunks(Q4_BLOCK).zip(br.chunks(Q4_BLOCK)) {
                    let m = wb
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let step = m / -8.0;
                    let plain: f32 = wb
                        .iter()
                        .map(|v| (v - step * (v / step).round().clamp(-8.0, 7.0)).powi(2))
                        .sum();
                    let got: f32 = wb.iter().zip(bb).map(|(a, b)| (a - b).powi(2)).sum();
                    assert!(got <= plain * 1.0001 + 1e-12, "row {r}: {got} > {plain}");
                    for (a, b) in wb.iter().zip(bb) {
                        assert!((a - b).abs() <= 2.0 * step.abs() + 1e-6, "row {r}");
                    }
                }
            }
            // The kernels see the inputs in 8 bits: the reference is the same product in f32.
            let want = inputs_in_8_bits(&x, q.padded_cols())
                .matmul(&back.t().unwrap())
                .unwrap();
            // And the inputs' 8 bits cost little against the f32 inputs: each input is off by
            // at most 1/254 of its block's largest (about 0.0055 RMS for N(0, 1) inputs), so a sum
            // of k products with N(0, 1) weights by about 0.0055 √k; the bound is 7 of those.
            if k >= 96 {
                let exact = x.matmul(&back.t().unwrap()).unwrap();
                let d = max_abs_diff(&want, &exact);
                assert!(
                    d < 0.04 * (k as f32).sqrt(),
                    "8-bit inputs m{m} n{n} k{k}: {d}"
                );
            }
            // With and without VNNI where the CPU has it (other tests running meanwhile may
            // take either path: they compute the same integers).
            for vnni in [true, false] {
                #[cfg(target_arch = "x86_64")]
                x86::USE_VNNI.store(vnni, std::sync::atomic::Ordering::Relaxed);
                for &kernel in Kernel::available() {
                    let got = matmul_t_q4_with(kernel, &x, &q).unwrap().unwrap();
                    let d = max_abs_diff(&got, &want);
                    assert!(d < 1e-3, "{kernel:?} (vnni {vnni}) q4 m{m} n{n} k{k}: {d}");
                }
            }
            #[cfg(target_arch = "x86_64")]
            x86::USE_VNNI.store(true, std::sync::atomic::Ordering::Relaxed);
            let got = matmul_t_q4(&x, &q).unwrap().unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-3, "q4 m{m} n{n} k{k}");
        }
        // An all-zero block quantizes to the middle nibble with scale 0 (no division by zero).
        let zero = Q4::quantize(&Tensor::zeros((2, 8), DType::F32, &dev).unwrap()).unwrap();
        assert!(zero.data.iter().all(|&q| q == 0x88) && zero.scales.iter().all(|&s| s == 0.0));
        let x = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
        for &kernel in Kernel::available() {
            let got = matmul_t_q4_with(kernel, &x, &zero).unwrap().unwrap();
            assert_eq!(got.to_vec2::<f32>().unwrap(), vec![vec![0f32; 2]; 2]);
        }
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
            let wide_w = wb.to_dtype(DType::F32).unwrap();
            let widened = x.matmul(&wide_w.t().unwrap()).unwrap();
            // What `vdpbf16ps` computes: the input rounded to bf16 too, the products exact.
            let x_bf16 = x
                .to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let both_bf16 = x_bf16.matmul(&wide_w.t().unwrap()).unwrap();
            let bf16_want = |kernel: Kernel| {
                if bf16_dot(kernel) {
                    &both_bf16
                } else {
                    &widened
                }
            };
            // Every kernel this CPU runs agrees with candle (the others are checked on the
            // machines that have them; `kernels_this_cpu_runs` says which ran here), bf16
            // with and without AVX-512 BF16 where the CPU has it.
            for &kernel in Kernel::available() {
                let other = matmul_t_with(kernel, &x, &w).unwrap().unwrap();
                let d = max_abs_diff(&other, &want);
                assert!(d < 1e-3, "{kernel:?} f32 m{m} n{n} k{k}: {d}");
                for dot in bf16_paths() {
                    #[cfg(target_arch = "x86_64")]
                    x86::USE_BF16_DOT.store(dot, std::sync::atomic::Ordering::Relaxed);
                    let other = matmul_t_with(kernel, &x, &wb).unwrap().unwrap();
                    let d = max_abs_diff(&other, bf16_want(kernel));
                    assert!(d < 1e-3, "{kernel:?} bf16 (dot {dot}) m{m} n{n} k{k}: {d}");
                }
                #[cfg(target_arch = "x86_64")]
                x86::USE_BF16_DOT.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // Rounding the input to bf16 is what makes the two bf16 paths differ, and it
            // shows: the check above would not pass one path for the other.
            if k >= 1024 {
                let d = max_abs_diff(&both_bf16, &widened);
                assert!(d > 1e-3, "m{m} n{n} k{k}: {d}");
            }
            // And so does the chosen one, through `matmul_t`.
            let got = matmul_t(&x, &w).unwrap().unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-3, "f32 m{m} n{n} k{k}: {d}");
            let got = matmul_t(&x, &wb).unwrap().unwrap();
            let d = max_abs_diff(&got, bf16_want(Kernel::chosen()));
            assert!(d < 1e-3, "bf16 m{m} n{n} k{k}: {d}");
        }
    }

    #[test]
    fn attention_helpers_match_plain_sums_with_every_kernel() {
        // Row counts past the groups, row lengths of a head (64), shorter than a vector, with
        // a tail; values rows further apart than their length (a cache's view).
        for (n, k, stride) in [
            (33, 64, 64),
            (7, 8, 8),
            (21, 72, 80),
            (1, 64, 64),
            (0, 64, 64),
        ] {
            // Multiples of 1/256 below 2 in magnitude: exact in bf16.
            let vals = |len: usize, seed: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i + seed) * 7919 % 509) as f32 - 254.0) / 128.0)
                    .collect()
            };
            let (w, x, p) = (vals(n * stride + k, 1), vals(k, 2), vals(n, 3));
            let keys: Vec<f32> = (0..n * k).map(|i| w[i / k * stride + i % k]).collect();
            let want_scores: Vec<f32> = (0..n)
                .map(|j| (0..k).map(|c| keys[j * k + c] * x[c]).sum())
                .collect();
            let start = vals(k, 4);
            let want_sum: Vec<f32> = (0..k)
                .map(|c| start[c] + (0..n).map(|j| p[j] * w[j * stride + c]).sum::<f32>())
                .collect();
            // The same rows in bf16 (the values above have at most 8 significant bits, so bf16
            // holds them exactly and the references stand).
            let to_bf16 = |v: &[f32]| -> Vec<half::bf16> {
                v.iter().map(|&x| half::bf16::from_f32(x)).collect()
            };
            assert!(keys.iter().all(|&x| half::bf16::from_f32(x).to_f32() == x));
            let (keys16, w16) = (to_bf16(&keys), to_bf16(&w));
            for &kernel in Kernel::available() {
                let mut scores = vec![0f32; n];
                rows_dot_with(kernel, &keys, &x, k, &mut scores);
                let mut scores16 = vec![0f32; n];
                rows_dot_with(kernel, &keys16, &x, k, &mut scores16);
                for ((a, a16), b) in scores.iter().zip(&scores16).zip(&want_scores) {
                    assert!((a - b).abs() < 1e-4, "{kernel:?} scores n{n} k{k}: {a} {b}");
                    assert!(
                        (a16 - b).abs() < 1e-4,
                        "{kernel:?} bf16 n{n} k{k}: {a16} {b}"
                    );
                }
                let mut sum = start.clone();
                weighted_rows_with(kernel, &p, &w, stride, &mut sum);
                let mut sum16 = start.clone();
                weighted_rows_with(kernel, &p, &w16, stride, &mut sum16);
                for ((a, a16), b) in sum.iter().zip(&sum16).zip(&want_sum) {
                    assert!((a - b).abs() < 1e-4, "{kernel:?} sum n{n} k{k}: {a} {b}");
                    assert!(
                        (a16 - b).abs() < 1e-4,
                        "{kernel:?} bf16 sum n{n} k{k}: {a16} {b}"
                    );
                }
            }
        }
    }

    /// `x` `[m, k]` as the byte kernels see it: quantized to 8 bits per block of 32 (rows
    /// padded to `padded`) and back.
    fn inputs_in_8_bits(x: &Tensor, padded: usize) -> Tensor {
        let (m, k) = x.dims2().unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let qx = QuantizedRows::new(&xs, m, k, padded, NIBBLE_OFFSET);
        let nb = qx.blocks();
        let x8: Vec<f32> = (0..m * k)
            .map(|p| {
                let (i, c) = (p / k, p % k);
                f32::from(qx.q[i * qx.padded + c]) * qx.scales[i * nb + c / Q4_BLOCK]
            })
            .collect();
        Tensor::from_vec(x8, (m, k), &Device::Cpu).unwrap()
    }

    /// The 8-bit paths to check: widened and, where the CPU has VNNI, byte products.
    fn q8_paths() -> Vec<bool> {
        #[cfg(target_arch = "x86_64")]
        if x86::vnni() {
            return vec![false, true];
        }
        vec![false]
    }

    /// The bf16 paths to check: with `vdpbf16ps` and without, where the CPU has it.
    fn bf16_paths() -> Vec<bool> {
        #[cfg(target_arch = "x86_64")]
        if x86::bf16_dot() {
            return vec![true, false];
        }
        vec![false]
    }
}
