//! 4-bit weights ([`Q4`]) and the 8-bit input rows they (and, with AVX-512 VNNI, 8-bit
//! weights) are multiplied with.
//!
//! The format is GGML's Q4_0 with an f32 scale: blocks of [`Q4_BLOCK`] weights along a row, one
//! scale each, two weights a byte. The products quantize the (few) input rows to 8 bits per
//! block as well, as GGML does, so the kernels multiply bytes by bytes (AVX2's and AVX-512's
//! `maddubs`: 32 or 64 products an instruction) instead of widening every weight to f32, which
//! is what limits [`super::Q8`]'s products.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// Weights per block, each block with its own scale.
pub const Q4_BLOCK: usize = 32;

/// Rows are padded to a whole number of block pairs: the AVX-512 kernel takes two blocks (64
/// weights, 32 bytes) a step.
const ROW_ALIGN: usize = 2 * Q4_BLOCK;

/// A weight matrix `[rows, cols]` in 4 bits: each block of 32 weights of a row holds
/// `round(w / scale) + 8` in `0..=15` with `scale = m / -8`, `m` the block's weight of largest
/// magnitude (so it maps to -8 exactly; GGML's Q4_0). The error is at most half a step
/// (`|scale| / 2`) per weight, a whole step for weights clamped at +7; an eighth of f32's bytes
/// plus a scale per 32 weights (5 bits a weight).
#[derive(Debug, Clone)]
pub struct Q4 {
    /// Two weights a byte, rows padded with zeros to [`Q4::padded_cols`]: in block `b`, byte
    /// `j` holds weight `32 b + j` in its low nibble and `32 b + j + 16` in its high one.
    pub data: Vec<u8>,
    /// One scale per block, `[rows, padded_cols / 32]`.
    pub scales: Vec<f32>,
    /// Output rows.
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
}

/// `cols` padded to whole block pairs.
pub(super) fn padded_cols(cols: usize) -> usize {
    cols.next_multiple_of(ROW_ALIGN).max(ROW_ALIGN)
}

/// `v` rounded to the nearest integer (ties to even), for `|v| < 2²²`: adding 1.5 · 2²³ leaves
/// no fraction bits, so the FPU rounds. `f32::round` is a call to libm's `roundf` on the
/// baseline x86-64 target (no SSE4.1), which took a seventh of a q4 render's time.
#[inline(always)]
fn round(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Candidate roundings per block besides Q4_0's (see [`best_scale`]).
const CANDIDATES: i32 = 8;

/// The block's scale and the inverse its weights are rounded with: of GGML's Q4_0 rounding
/// (`m / -8`, `m` the weight of largest magnitude) and a few slightly smaller or larger ones,
/// the one with the least squared error, each with its scale refitted to the rounded values by
/// least squares (llama.cpp's `make_qx_quants`). Never worse than Q4_0's rounding; it brings the
/// largest error in tiny-a's logits from 101 % to 70 % of their spread. The error of a refitted
/// rounding `q` is `Σv² - (Σvq)² / Σq²`, so each candidate takes one pass over the block.
#[inline(always)]
fn best_scale(block: &[f32]) -> (f32, f32) {
    let m = block
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if m == 0.0 {
        return (0.0, 0.0);
    }
    let vv = lane_sum(block, |v| v * v);
    let plain = -8.0 / m;
    let plain_err = lane_sum(block, |v| {
        let e = v - round(v * plain).clamp(-8.0, 7.0) / plain;
        e * e
    });
    let (mut best, mut best_err) = ((m / -8.0, plain), plain_err);
    for c in -CANDIDATES / 2..=CANDIDATES / 2 {
        let inv = -(8.0 + 0.1 * c as f32) / m;
        let q = |v: f32| round(v * inv).clamp(-8.0, 7.0);
        let vq = lane_sum(block, |v| v * q(v));
        let qq = lane_sum(block, |v| q(v) * q(v));
        let err = vv - vq * vq / qq;
        if err < best_err && qq > 0.0 {
            (best, best_err) = ((vq / qq, inv), err);
        }
    }
    best
}

/// One padded row's blocks into `bytes` and `scales` (see [`best_scale`]).
#[inline(always)]
fn quantize_row_body(row: &[f32], bytes: &mut [u8], scales: &mut [f32]) {
    for ((block, bytes), scale) in row
        .chunks_exact(Q4_BLOCK)
        .zip(bytes.chunks_exact_mut(Q4_BLOCK / 2))
        .zip(scales.iter_mut())
    {
        let (s, inv) = best_scale(block);
        *scale = s;
        let q = |v: f32| (round(v * inv) + 8.0).clamp(0.0, 15.0) as u8;
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = q(block[j]) | (q(block[j + Q4_BLOCK / 2]) << 4);
        }
    }
}

/// [`quantize_row_body`] compiled for `kernel`'s instruction set: the scale search was most of
/// a q4 load in the baseline target's 4-wide vectors. Each width runs the same IEEE operations
/// in the same order (Rust never fuses a multiply and an add), so the bytes do not depend on it.
fn quantize_row(kernel: super::Kernel, row: &[f32], bytes: &mut [u8], scales: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(row: &[f32], bytes: &mut [u8], scales: &mut [f32]) {
            quantize_row_body(row, bytes, scales)
        }
        #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
        unsafe fn avx512(row: &[f32], bytes: &mut [u8], scales: &mut [f32]) {
            quantize_row_body(row, bytes, scales)
        }
        match kernel {
            // SAFETY: `Kernel::available` lists a kernel only where the CPU has its features,
            // and callers pass one of those.
            super::Kernel::Avx512 => return unsafe { avx512(row, bytes, scales) },
            // SAFETY: as above.
            super::Kernel::Avx2 => return unsafe { avx2(row, bytes, scales) },
            super::Kernel::Generic => {}
        }
    }
    let _ = kernel;
    quantize_row_body(row, bytes, scales)
}

/// `Σ f(v)` over a block, summed in [`LANES`] independent partial sums so the compiler can keep
/// them in one vector register (a single running f32 sum must stay scalar to keep its order):
/// the scale search was most of a q4 load.
#[inline(always)]
fn lane_sum(block: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let whole = block.len() - block.len() % LANES;
    for chunk in block[..whole].chunks_exact(LANES) {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + block[whole..].iter().map(|&v| f(v)).sum::<f32>()
}

/// Partial sums in [`lane_sum`].
const LANES: usize = 8;

impl Q4 {
    /// Quantizes a `[rows, cols]` weight of any float dtype.
    pub fn quantize(w: &Tensor) -> candle_core::Result<Q4> {
        super::with_f32_rows(w, |rows, cols| Q4::from_rows(rows, cols, 1.0))
    }

    /// Quantizes the weight whose rows are `rows` (`cols` values each), every value multiplied
    /// by `factor` first (as candle's `w * factor` rounds it), reading the rows where they lie
    /// (see [`Q8::from_rows`](super::Q8::from_rows)).
    pub fn from_rows(rows: &[&[f32]], cols: usize, factor: f32) -> Q4 {
        Q4::from_rows_with(super::Kernel::chosen(), rows, cols, factor)
    }

    /// [`Q4::from_rows`] with the scale search compiled for `kernel`'s vectors (one of
    /// [`Kernel::available`](super::Kernel::available)): the same bytes with any of them.
    fn from_rows_with(kernel: super::Kernel, rows: &[&[f32]], cols: usize, factor: f32) -> Q4 {
        assert!(
            rows.iter().all(|r| r.len() == cols),
            "rows of {cols} values"
        );
        let kp = padded_cols(cols);
        let nb = kp / Q4_BLOCK;
        let mut data = vec![0u8; rows.len() * kp / 2];
        let mut scales = vec![0f32; rows.len() * nb];
        data.par_chunks_mut(kp / 2)
            .zip(scales.par_chunks_mut(nb))
            .zip(rows.par_iter())
            .for_each(|((bytes, scales), values)| {
                let mut row = vec![0f32; kp];
                for (r, &v) in row.iter_mut().zip(values.iter()) {
                    *r = super::scaled(v, factor);
                }
                quantize_row(kernel, &row, bytes, scales);
            });
        Q4 {
            data,
            scales,
            rows: rows.len(),
            cols,
        }
    }

    /// Inputs per row as stored (whole block pairs, the padding zeros).
    pub fn padded_cols(&self) -> usize {
        padded_cols(self.cols)
    }

    /// Weight `c` of row `r`, as the kernels read it.
    fn value(&self, r: usize, c: usize) -> f32 {
        let kp = self.padded_cols();
        let (b, j) = (c / Q4_BLOCK, c % Q4_BLOCK);
        let byte = self.data[r * kp / 2 + b * Q4_BLOCK / 2 + j % (Q4_BLOCK / 2)];
        let q = if j < Q4_BLOCK / 2 {
            byte & 15
        } else {
            byte >> 4
        };
        (f32::from(q) - 8.0) * self.scales[r * kp / Q4_BLOCK + b]
    }

    /// The weight back in f32 `[rows, cols]` (for products with many rows, which take candle's
    /// matmul, and as the reference the kernels are checked against).
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let values: Vec<f32> = (0..self.rows * self.cols)
            .into_par_iter()
            .map(|i| self.value(i / self.cols, i % self.cols))
            .collect();
        Tensor::from_vec(values, (self.rows, self.cols), device)
    }
}

/// The input rows of a 4-bit product (or an 8-bit one under VNNI) in 8 bits: per block of 32
/// inputs, `round(x / scale)` in `-127..=127` with `scale = max |x| / 127` (GGML's Q8_0), rows
/// padded with zeros to whole block pairs. The kernels multiply unsigned weights `u = q + offset`
/// (nibbles `0..=15` with offset [`NIBBLE_OFFSET`], bytes `0..=255` with [`BYTE_OFFSET`]: `maddubs`
/// and `vpdpbusd` want one side unsigned) by these bytes in groups of 4 (one i32 lane); `sums`
/// holds each group's `offset · Σ x`, which, subtracted from the lane, takes the offset back out
/// exactly.
#[derive(Debug, Default)]
pub struct QuantizedRows {
    /// `[rows, padded]` 8-bit inputs.
    pub q: Vec<i8>,
    /// `[rows, padded / 32]` scales.
    pub scales: Vec<f32>,
    /// `[rows, padded / 4]`: the weights' offset times the sum of each 4 consecutive inputs
    /// (see above).
    pub sums: Vec<i32>,
    /// Inputs per row, padded.
    pub padded: usize,
}

/// Inputs per i32 lane of the kernels' byte products.
pub const LANE: usize = 4;

/// What the kernels add to a 4-bit weight to make it unsigned (see [`Q4`]).
pub const NIBBLE_OFFSET: i32 = 8;
/// What the VNNI kernel adds to an 8-bit weight to make it unsigned (a flip of its sign bit).
pub const BYTE_OFFSET: i32 = 128;

impl QuantizedRows {
    /// Quantizes `m` rows of `k` inputs (`xs`), padded to `padded`, for weights made unsigned
    /// by adding `offset`.
    pub fn new(xs: &[f32], m: usize, k: usize, padded: usize, offset: i32) -> QuantizedRows {
        let vectors = super::Kernel::available().contains(&super::Kernel::Avx512);
        QuantizedRows::quantize(xs, m, k, padded, offset, vectors)
    }

    /// [`QuantizedRows::new`], the whole blocks in AVX-512 vectors if `vectors` (the CPU must
    /// have AVX-512F and BW), else all in scalar code: the same bytes either way (the scalar
    /// loop took 1.4 ns an input, 11 µs of a 140 µs product at k = 4096).
    fn quantize(
        xs: &[f32],
        m: usize,
        k: usize,
        padded: usize,
        offset: i32,
        vectors: bool,
    ) -> QuantizedRows {
        let nb = padded / Q4_BLOCK;
        let mut out = QuantizedRows {
            q: vec![0i8; m * padded],
            scales: vec![0f32; m * nb],
            sums: vec![0i32; m * padded / LANE],
            padded,
        };
        for i in 0..m {
            let x = &xs[i * k..(i + 1) * k];
            let q = &mut out.q[i * padded..(i + 1) * padded];
            let scales = &mut out.scales[i * nb..(i + 1) * nb];
            let sums = &mut out.sums[i * padded / LANE..(i + 1) * padded / LANE];
            #[cfg(target_arch = "x86_64")]
            let done = if vectors {
                // SAFETY: the caller says the CPU has AVX-512F and BW.
                unsafe { super::x86::quantize_blocks(x, q, scales, sums, offset) }
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let done = {
                let _ = vectors;
                0
            };
            for b in done..nb {
                let block = &x[(b * Q4_BLOCK).min(k)..((b + 1) * Q4_BLOCK).min(k)];
                let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = max / 127.0;
                let inv = if max > 0.0 { 1.0 / scale } else { 0.0 };
                let qb = &mut q[b * Q4_BLOCK..][..block.len()];
                for (q, v) in qb.iter_mut().zip(block) {
                    *q = round(v * inv).clamp(-127.0, 127.0) as i8;
                }
                scales[b] = scale;
            }
            let from = done * Q4_BLOCK;
            for (s, group) in sums[from / LANE..]
                .iter_mut()
                .zip(q[from..].chunks_exact(LANE))
            {
                *s = offset * group.iter().map(|&v| i32::from(v)).sum::<i32>();
            }
        }
        out
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.padded / Q4_BLOCK
    }
}

/// The portable kernel: one 4-bit weight row (`w`, `scales`) against every input row.
pub(super) fn dots_generic(w: &[u8], scales: &[f32], x: &QuantizedRows, dst: &mut [f32]) {
    let nb = x.blocks();
    for (i, d) in dst.iter_mut().enumerate() {
        let xq = &x.q[i * x.padded..(i + 1) * x.padded];
        let xs = &x.scales[i * nb..(i + 1) * nb];
        let sums = &x.sums[i * x.padded / LANE..(i + 1) * x.padded / LANE];
        let mut s = 0f32;
        for (b, ((bytes, xb), sb)) in w
            .chunks_exact(Q4_BLOCK / 2)
            .zip(xq.chunks_exact(Q4_BLOCK))
            .zip(sums.chunks_exact(Q4_BLOCK / LANE))
            .enumerate()
        {
            let (lo, hi) = xb.split_at(Q4_BLOCK / 2);
            let mut acc = -sb.iter().sum::<i32>();
            for j in 0..Q4_BLOCK / 2 {
                acc += i32::from(bytes[j] & 15) * i32::from(lo[j])
                    + i32::from(bytes[j] >> 4) * i32::from(hi[j]);
            }
            s += scales[b] * xs[b] * acc as f32;
        }
        *d = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights' quantizer gives the same bytes and scales compiled for every instruction
    /// set this CPU has (an unsafe dispatch to one it lacks would crash, not differ).
    #[test]
    fn weight_quantizer_is_the_same_at_every_width() {
        let (rows, cols) = (5, 200);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.0137 * (1.0 + (i % 13) as f32))
            .collect();
        let slices: Vec<&[f32]> = values.chunks(cols).collect();
        let want = Q4::from_rows_with(super::super::Kernel::Generic, &slices, cols, 0.37);
        for &kernel in super::super::Kernel::available() {
            let got = Q4::from_rows_with(kernel, &slices, cols, 0.37);
            assert_eq!(got.data, want.data, "{kernel:?}");
            assert_eq!(got.scales, want.scales, "{kernel:?}");
        }
    }

    /// The AVX-512 quantizer writes the same bytes, scales and sums as the scalar one: row
    /// lengths with partial blocks and padding, all-zero blocks, ties, large and tiny values.
    #[test]
    fn vector_and_scalar_input_quantizers_agree() {
        if !super::super::Kernel::available().contains(&super::super::Kernel::Avx512) {
            eprintln!("no AVX-512 here: only the scalar quantizer runs");
            return;
        }
        for (m, k) in [(1, 37), (2, 1024), (3, 200), (2, 4096), (1, 7), (2, 96)] {
            let mut xs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.013)
                .collect();
            // A zero block, a block of ties (halves after scaling), tiny and large values.
            xs[..32.min(k)].iter_mut().for_each(|v| *v = 0.0);
            if k >= 96 {
                for (j, v) in xs[32..64].iter_mut().enumerate() {
                    *v = if j == 0 { 127.0 } else { 0.5 + j as f32 };
                }
                xs[64..96].iter_mut().for_each(|v| *v *= 1e-30);
                xs[70] = 3e30;
            }
            let padded = padded_cols(k);
            for offset in [NIBBLE_OFFSET, BYTE_OFFSET] {
                let a = QuantizedRows::quantize(&xs, m, k, padded, offset, true);
                let b = QuantizedRows::quantize(&xs, m, k, padded, offset, false);
                assert_eq!(a.q, b.q, "m{m} k{k}");
                assert_eq!(a.scales, b.scales, "m{m} k{k}");
                assert_eq!(a.sums, b.sums, "m{m} k{k}");
            }
        }
    }
}
