//! The codec's convolutions on the CPU in f32, in time chunks over `gemm`.
//!
//! EnCodec's decoder ends in long signals with few channels (64 x 320,000 samples for 10 s at
//! 32 kHz). Built from candle ops, each convolution there made several full-length copies (a
//! shifted input per tap, partial sums, the ELU before it, the bias and the residual after), and
//! the transposed ones an overlap-add that read its products across the cache: twice
//! transformers' decode time. Here each task takes a chunk of output samples, unfolds just the
//! input it needs (with the ELU applied on the way) into a buffer that stays in the cache, and
//! lets one `gemm` write the chunk's outputs in place, on top of the bias and residual.

use rayon::prelude::*;

/// Output samples (or, for a transposed convolution, input steps) per task: enough columns for
/// `gemm` to run at speed, small enough that the unfolded input stays in the L2 cache.
const CHUNK: usize = 1024;

/// Output channels up to which [`conv1d`] multiplies and adds directly instead of calling `gemm`.
const FEW_OUTPUTS: usize = 2;

/// Copies `src` into `dst`, through ELU (alpha 1, what `Layer::Elu` applies before a
/// convolution) when `elu`. `e^v - 1` is taken in f64 with the branch-free exponential, which
/// vectorises (libm's scalar `expm1f` was the decode's third-largest cost) and keeps f32's
/// precision near 0, where `e^v - 1` cancels.
fn act(src: &[f32], dst: &mut [f32], elu: bool) {
    if elu {
        for (d, &v) in dst.iter_mut().zip(src) {
            let e = (crate::rfm::real::exp_f64(f64::from(v)) - 1.0) as f32;
            *d = if v < 0.0 { e } else { v };
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// A raw output pointer that tasks writing disjoint parts of one buffer can share.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a disjoint set of elements (see the callers).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element `i` places past the start (a method, so closures capture the whole `Out`,
    /// which is `Send`, rather than its raw pointer field).
    ///
    /// # Safety
    /// `i` must lie within the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` within the buffer.
        unsafe { self.0.add(i) }
    }
}

/// One item's convolution: `x` `[c_in, len]` (already padded), `weight` `[c_out, c_in, k]`,
/// output `[c_out, (len - (k - 1) * dilation - 1) / stride + 1]` = `bias` (+ `residual`, same
/// shape as the output) + weight ∗ act(x), with `act` the ELU when `elu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv1d(
    x: &[f32],
    c_in: usize,
    weight: &[f32],
    c_out: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
    elu: bool,
) -> Vec<f32> {
    let len = x.len() / c_in.max(1);
    let span = (k - 1) * dilation;
    let out_len = if len > span {
        (len - span - 1) / stride + 1
    } else {
        0
    };
    let mut y = vec![0f32; c_out * out_len];
    if out_len == 0 {
        return y;
    }
    let depth = c_in * k;
    let out = Out(y.as_mut_ptr());
    (0..out_len.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let s0 = c * CHUNK;
        let n = CHUNK.min(out_len - s0);
        // The chunk's input with the activation applied once per sample.
        let width = (n - 1) * stride + span + 1;
        let mut xe = vec![0f32; c_in * width];
        for ci in 0..c_in {
            act(
                &x[ci * len + s0 * stride..][..width],
                &mut xe[ci * width..][..width],
                elu,
            );
        }
        for o in 0..c_out {
            // SAFETY: this task alone writes samples s0..s0 + n of every output row.
            let row = unsafe { std::slice::from_raw_parts_mut(out.at(o * out_len + s0), n) };
            match residual {
                Some(r) => {
                    for (d, v) in row.iter_mut().zip(&r[o * out_len + s0..][..n]) {
                        *d = bias[o] + v;
                    }
                }
                None => row.fill(bias[o]),
            }
        }
        if c_out <= FEW_OUTPUTS {
            // A product with one or two output rows is a weighted sum of shifted input rows:
            // straight multiply-adds over the chunk (a `gemm` of one row runs far below speed).
            for o in 0..c_out {
                // SAFETY: as above.
                let row = unsafe { std::slice::from_raw_parts_mut(out.at(o * out_len + s0), n) };
                for ci in 0..c_in {
                    for j in 0..k {
                        let w = weight[(o * c_in + ci) * k + j];
                        let src = xe[ci * width + j * dilation..].iter().step_by(stride);
                        for (d, v) in row.iter_mut().zip(src) {
                            *d += w * v;
                        }
                    }
                }
            }
            return;
        }
        // Unfolded input: row (channel, tap) holds the samples that tap sees for this chunk (a
        // 1-tap kernel of stride 1 reads the input as it is).
        let cols = if k == 1 && stride == 1 {
            xe
        } else {
            let mut cols = vec![0f32; depth * n];
            for ci in 0..c_in {
                for j in 0..k {
                    let src = xe[ci * width + j * dilation..].iter().step_by(stride);
                    for (d, v) in cols[(ci * k + j) * n..][..n].iter_mut().zip(src) {
                        *d = *v;
                    }
                }
            }
            cols
        };
        // SAFETY: `cols` is `[depth, n]`, `weight` `[c_out, depth]`, the destination `[c_out,
        // n]` with row stride `out_len`, written by this task alone; `gemm` adds onto it.
        unsafe {
            gemm::gemm(
                c_out,
                n,
                depth,
                out.at(s0),
                1,
                out_len as isize,
                true,
                weight.as_ptr(),
                1,
                depth as isize,
                cols.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    y
}

/// One item's transposed convolution whose kernel is a whole number of strides (EnCodec's
/// is two): `x` `[c_in, t]`, `weight_t` the kernel `[c_in, c_out, k]` transposed to `[c_out *
/// k, c_in]`, output samples `trim_left..trim_left + len` of the full `(t + k / stride - 1) *
/// stride`, plus `bias`; `act` (the ELU when `elu`) applies to `x` first. Output sample
/// `s * stride + u` sums the products of input steps `s - q` with kernel taps `q * stride + u`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_transpose1d(
    x: &[f32],
    c_in: usize,
    weight_t: &[f32],
    c_out: usize,
    k: usize,
    stride: usize,
    bias: &[f32],
    trim_left: usize,
    len: usize,
    elu: bool,
) -> Vec<f32> {
    let t = x.len() / c_in.max(1);
    let r = k / stride;
    let mut y = vec![0f32; c_out * len];
    if len == 0 {
        return y;
    }
    // Output steps (groups of `stride` samples) a task fills: those whose samples land in the
    // trimmed range.
    let first_step = trim_left / stride;
    let last_step = (trim_left + len - 1) / stride;
    let steps = last_step + 1 - first_step;
    let out = Out(y.as_mut_ptr());
    let rows = c_out * k;
    (0..steps.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let s0 = first_step + c * CHUNK;
        let s1 = (s0 + CHUNK).min(last_step + 1);
        // Input steps that reach output steps s0..s1.
        let i0 = s0.saturating_sub(r - 1);
        let i1 = s1.min(t);
        if i1 <= i0 {
            return;
        }
        let n = i1 - i0;
        let mut xin = vec![0f32; c_in * n];
        for ci in 0..c_in {
            act(&x[ci * t + i0..][..n], &mut xin[ci * n..][..n], elu);
        }
        // prods[(o * k + tap), i]: input step i0 + i through kernel tap `tap` of output o.
        let mut prods = vec![0f32; rows * n];
        // SAFETY: `weight_t` `[rows, c_in]`, `xin` `[c_in, n]`, `prods` `[rows, n]`, all owned
        // or borrowed for the call.
        unsafe {
            gemm::gemm(
                rows,
                n,
                c_in,
                prods.as_mut_ptr(),
                1,
                n as isize,
                false,
                weight_t.as_ptr(),
                1,
                c_in as isize,
                xin.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for o in 0..c_out {
            for s in s0..s1 {
                for u in 0..stride {
                    let sample = s * stride + u;
                    if sample < trim_left || sample >= trim_left + len {
                        continue;
                    }
                    let mut v = bias[o];
                    for q in 0..r {
                        if s >= q && s - q >= i0 && s - q < i1 {
                            v += prods[(o * k + q * stride + u) * n + (s - q - i0)];
                        }
                    }
                    // SAFETY: output steps s0..s1 belong to this task alone.
                    unsafe { *out.at(o * len + sample - trim_left) = v };
                }
            }
        }
    });
    y
}

/// [`act`] with the ELU, for the codec's tests.
#[cfg(test)]
pub(crate) fn elu_for_tests(src: &[f32], dst: &mut [f32]) {
    act(src, dst, true)
}
