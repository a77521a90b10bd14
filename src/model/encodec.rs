//! EnCodec, the audio codec MusicGen writes its codes for: SEANet encoder and decoder, LSTM and
//! residual vector quantiser, following Hugging Face's `EncodecModel`.
//!
//! Weights are read through a `VarBuilder` at the checkpoint's `audio_encoder` prefix, names as
//! in the checkpoint (`encoder.layers.{i}.conv`, `decoder.layers.{i}.lstm`,
//! `quantizer.layers.{q}.codebook.embed`). Weight-normalised convolutions are resolved into plain
//! kernels at load time, from either stored layout: `weight_g` / `weight_v` (the facebook
//! checkpoints) or `parametrizations.weight.original0` / `original1` (saved by transformers 5).
//!
//! Convolutions pad the way HF does: `kernel - stride` in total (split evenly, the odd sample on
//! the left, for non-causal models; all on the left for causal ones) plus extra right padding so
//! the last window is complete, in `reflect` mode by default (with HF's zero extension when the
//! input is shorter than the padding). Transposed convolutions trim the same `kernel - stride`
//! samples, so `T` frames decode to exactly `T * hop_length` samples.
//!
//! Everything runs in f32. Only whole-clip coding is supported (`chunk_length_s` unset, as in the
//! 32 kHz MusicGen codec) and no loudness normalisation (`normalize` false).

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::conv_cpu;

/// The `audio_encoder` object of MusicGen's config.json (Hugging Face `EncodecConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EncodecConfig {
    /// Audio sample rate in Hz.
    #[serde(default = "default_sampling_rate")]
    pub sampling_rate: u32,
    /// Audio channels (MusicGen's codec is mono).
    #[serde(default = "one")]
    pub audio_channels: usize,
    /// Width of the latent the quantiser codes.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Channels of the first convolution; doubled at each downsampling.
    #[serde(default = "default_num_filters")]
    pub num_filters: usize,
    /// Residual blocks per resolution.
    #[serde(default = "one")]
    pub num_residual_layers: usize,
    /// Decoder upsampling ratios (the encoder uses them reversed); their product is the hop.
    #[serde(default = "default_ratios")]
    pub upsampling_ratios: Vec<usize>,
    /// `weight_norm` (supported) or `time_group_norm` (not supported).
    #[serde(default = "default_norm_type")]
    pub norm_type: String,
    /// Kernel of the first convolution.
    #[serde(default = "seven")]
    pub kernel_size: usize,
    /// Kernel of the last convolution.
    #[serde(default = "seven")]
    pub last_kernel_size: usize,
    /// Kernel of the first convolution in each residual block.
    #[serde(default = "three")]
    pub residual_kernel_size: usize,
    /// Dilation growth between residual blocks.
    #[serde(default = "two")]
    pub dilation_growth_rate: usize,
    /// Causal padding (left only) instead of centred padding.
    #[serde(default = "yes")]
    pub use_causal_conv: bool,
    /// `reflect` (MusicGen), `constant`/`zeros` or `replicate`.
    #[serde(default = "default_pad_mode")]
    pub pad_mode: String,
    /// Channel reduction inside residual blocks.
    #[serde(default = "two")]
    pub compress: usize,
    /// Layers of the LSTM after the encoder / before the decoder.
    #[serde(default = "two")]
    pub num_lstm_layers: usize,
    /// Share of the transposed-conv trim taken on the right (causal models only).
    #[serde(default = "default_trim_right_ratio")]
    pub trim_right_ratio: f64,
    /// Entries per codebook.
    #[serde(default = "default_codebook_size")]
    pub codebook_size: usize,
    /// Width of a codebook entry (defaults to `hidden_size`).
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    /// 1x1 convolution on the residual path instead of identity.
    #[serde(default = "yes")]
    pub use_conv_shortcut: bool,
    /// Bandwidths in kbps; the last one sets the number of codebooks.
    #[serde(default = "default_bandwidths")]
    pub target_bandwidths: Vec<f64>,
    /// Loudness normalisation before encoding (not supported).
    #[serde(default)]
    pub normalize: bool,
    /// Chunked coding (not supported).
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
}

fn default_sampling_rate() -> u32 {
    24_000
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn seven() -> usize {
    7
}
fn yes() -> bool {
    true
}
fn default_hidden_size() -> usize {
    128
}
fn default_num_filters() -> usize {
    32
}
fn default_ratios() -> Vec<usize> {
    vec![8, 5, 4, 2]
}
fn default_norm_type() -> String {
    "weight_norm".to_string()
}
fn default_pad_mode() -> String {
    "reflect".to_string()
}
fn default_trim_right_ratio() -> f64 {
    1.0
}
fn default_codebook_size() -> usize {
    1024
}
fn default_bandwidths() -> Vec<f64> {
    vec![1.5, 3.0, 6.0, 12.0, 24.0]
}

impl EncodecConfig {
    /// Samples per code frame (product of the ratios; 640 for the 32 kHz codec).
    /// Saturates on a product that overflows `usize`, which validation rejects.
    pub fn hop_length(&self) -> usize {
        self.checked_hop_length().unwrap_or(usize::MAX)
    }

    /// The product of the ratios, or `None` when it overflows (a corrupt config).
    pub fn checked_hop_length(&self) -> Option<usize> {
        self.upsampling_ratios
            .iter()
            .try_fold(1usize, |acc, &r| acc.checked_mul(r))
    }

    /// Code frames per second, rounded up as HF does (50 for the 32 kHz codec).
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length().max(1))
    }

    /// Width of a codebook entry.
    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Number of quantiser levels stored in the checkpoint, derived from the last target
    /// bandwidth exactly as HF's `num_quantizers`.
    pub fn num_quantizers(&self) -> usize {
        let nbits = (self.codebook_size as f64).log2().ceil();
        let bandwidth = self.target_bandwidths.last().copied().unwrap_or(0.0);
        (1000.0 * bandwidth / (self.frame_rate() as f64 * nbits)).floor() as usize
    }

    fn validate(&self) -> candle_core::Result<()> {
        if self.norm_type != "weight_norm" {
            candle_core::bail!(
                "EnCodec norm_type {:?} is not supported (only weight_norm)",
                self.norm_type
            );
        }
        if self.chunk_length_s.is_some() {
            candle_core::bail!("chunked EnCodec models (chunk_length_s set) are not supported");
        }
        if self.normalize {
            candle_core::bail!("EnCodec models with normalize = true are not supported");
        }
        if self.audio_channels != 1 {
            candle_core::bail!("only mono EnCodec models are supported");
        }
        if self.upsampling_ratios.is_empty() || self.upsampling_ratios.contains(&0) {
            candle_core::bail!("EnCodec upsampling_ratios must be non-empty and positive");
        }
        if self.checked_hop_length().is_none() {
            candle_core::bail!(
                "corrupt EnCodec config: the product of upsampling_ratios overflows"
            );
        }
        PadMode::parse(&self.pad_mode)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Reflect,
    Zeros,
    Replicate,
}

impl PadMode {
    fn parse(name: &str) -> candle_core::Result<Self> {
        match name {
            "reflect" => Ok(Self::Reflect),
            "constant" | "zeros" => Ok(Self::Zeros),
            "replicate" => Ok(Self::Replicate),
            other => candle_core::bail!("unsupported EnCodec pad_mode {other:?}"),
        }
    }
}

/// Pads the last dim of `[batch, channels, time]`. Reflect padding of an input no longer than
/// the padding first appends zeros, as HF's `_pad1d` does, then drops them again.
fn pad1d(xs: &Tensor, left: usize, right: usize, mode: PadMode) -> candle_core::Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(xs.clone());
    }
    match mode {
        PadMode::Zeros => xs.pad_with_zeros(D::Minus1, left, right),
        PadMode::Replicate => xs.pad_with_same(D::Minus1, left, right),
        PadMode::Reflect if xs.device().is_cpu() && xs.dim(D::Minus1)? > left.max(right) => {
            // Row by row on the CPU (the gather below is a slow pass at full resolution).
            let (b, c, len) = xs.dims3()?;
            let total = left + len + right;
            with_values(xs, |x| {
                let mut out = Vec::with_capacity(b * c * total);
                for row in x.chunks_exact(len) {
                    out.extend((1..=left).rev().map(|i| row[i]));
                    out.extend_from_slice(row);
                    out.extend((1..=right).map(|i| row[len - 1 - i]));
                }
                Tensor::from_vec(out, (b, c, total), xs.device())
            })
        }
        PadMode::Reflect => {
            let len = xs.dim(D::Minus1)?;
            let max_pad = left.max(right);
            let extra = if len <= max_pad { max_pad - len + 1 } else { 0 };
            let xs = if extra > 0 {
                xs.pad_with_zeros(D::Minus1, 0, extra)?
            } else {
                xs.clone()
            };
            let n = (len + extra) as i64;
            let idx: Vec<u32> = (-(left as i64)..n + right as i64)
                .map(|i| {
                    let j = if i < 0 {
                        -i
                    } else if i >= n {
                        2 * (n - 1) - i
                    } else {
                        i
                    };
                    j as u32
                })
                .collect();
            let total = idx.len();
            let idx = Tensor::from_vec(idx, total, xs.device())?;
            let padded = xs.index_select(&idx, 2)?;
            padded.narrow(2, 0, total - extra)
        }
    }
}

/// Reads a (possibly weight-normalised) kernel `name` of `shape` and resolves it to a plain
/// tensor: `g * v / ||v||`, the norm taken over all dims but the first (torch's `dim=0`).
fn weight_norm_kernel(
    vb: &VarBuilder,
    shape: (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    let g_shape = (shape.0, 1, 1);
    let (g, v) = if vb.contains_tensor("weight_g") {
        (vb.get(g_shape, "weight_g")?, vb.get(shape, "weight_v")?)
    } else if vb.contains_tensor("parametrizations.weight.original0") {
        (
            vb.get(g_shape, "parametrizations.weight.original0")?,
            vb.get(shape, "parametrizations.weight.original1")?,
        )
    } else {
        // An already resolved kernel (e.g. a checkpoint converted without weight norm).
        return vb.get(shape, "weight");
    };
    let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
    v.broadcast_mul(&g.broadcast_div(&norm)?)
}

/// `EncodecConv1d`: a convolution with HF's padding rule.
#[derive(Debug, Clone)]
struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    /// The same kernel for [`conv_cpu`] when on the CPU.
    cpu: Option<CpuKernel>,
    stride: usize,
    dilation: usize,
    kernel: usize,
    causal: bool,
    pad_mode: PadMode,
}

impl Conv1d {
    fn load(
        vb: VarBuilder,
        cfg: &EncodecConfig,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let vb = vb.pp("conv");
        let weight = weight_norm_kernel(&vb, (c_out, c_in, kernel))?;
        let bias = vb.get(c_out, "bias")?.reshape((1, c_out, 1))?;
        Ok(Self {
            cpu: CpuKernel::new(&weight, &bias)?,
            weight,
            bias,
            stride,
            dilation,
            kernel,
            causal: cfg.use_causal_conv,
            pad_mode: PadMode::parse(&cfg.pad_mode)?,
        })
    }
}

impl Module for Conv1d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, false, None)
    }
}

impl Conv1d {
    /// The convolution of `xs`, or of ELU(`xs`) when `elu`, plus `residual` (shaped as the
    /// output) when given: on the CPU the ELU and the sum happen inside [`conv_cpu::conv1d`]'s
    /// chunks instead of as passes of their own.
    fn forward_with(
        &self,
        xs: &Tensor,
        elu: bool,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let len = xs.dim(D::Minus1)?;
        let kernel = (self.kernel - 1) * self.dilation + 1;
        let padding_total = kernel - self.stride;
        // HF's `_get_extra_padding_for_conv1d`, in the same float arithmetic.
        let frames =
            ((len as f64 - kernel as f64 + padding_total as f64) / self.stride as f64 + 1.0).ceil()
                - 1.0;
        let ideal = frames as i64 * self.stride as i64 + kernel as i64 - padding_total as i64;
        let extra = (ideal - len as i64).max(0) as usize;
        let (left, right) = if self.causal {
            (padding_total, extra)
        } else {
            let right = padding_total / 2;
            (padding_total - right, right + extra)
        };
        let xs = pad1d(xs, left, right, self.pad_mode)?;
        if xs.device().is_cpu() {
            return self.forward_cpu(&xs, elu, residual);
        }
        let xs = if elu { xs.elu(1.0)? } else { xs };
        let ys = if self.stride == 1 {
            conv1d_by_taps(&xs, &self.weight, self.dilation)?
        } else {
            xs.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?
        };
        let ys = ys.broadcast_add(&self.bias)?;
        match residual {
            Some(r) => ys + r,
            None => Ok(ys),
        }
    }

    /// The convolution of padded `xs` on the CPU, item by item.
    fn forward_cpu(
        &self,
        xs: &Tensor,
        elu: bool,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, c_in, len) = xs.dims3()?;
        let (c_out, _, k) = self.weight.dims3()?;
        let span = (k - 1) * self.dilation;
        if len <= span {
            candle_core::bail!("conv1d: input of {len} samples is shorter than the kernel span");
        }
        let out_len = (len - span - 1) / self.stride + 1;
        let Some(cpu) = &self.cpu else {
            candle_core::bail!("conv1d: kernel not loaded for the CPU");
        };
        let item_out = c_out * out_len;
        if residual.is_some_and(|r| r.elem_count() != b * item_out) {
            candle_core::bail!("conv1d: the residual is not shaped as the output");
        }
        let run = |x: &[f32], residual: Option<&[f32]>| {
            let mut out = Vec::with_capacity(b * item_out);
            for i in 0..b {
                out.extend(conv_cpu::conv1d(
                    &x[i * c_in * len..][..c_in * len],
                    c_in,
                    &cpu.weight,
                    c_out,
                    k,
                    self.stride,
                    self.dilation,
                    &cpu.bias,
                    residual.map(|r| &r[i * item_out..][..item_out]),
                    elu,
                ));
            }
            Tensor::from_vec(out, (b, c_out, out_len), xs.device())
        };
        with_values(xs, |x| match residual {
            Some(r) => with_values(r, |r| run(x, Some(r))),
            None => run(x, None),
        })
    }
}

/// Runs `f` on a tensor's values in f32, row-major, without a copy when it is already a
/// contiguous f32 CPU tensor.
fn with_values<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    use candle_core::{CpuStorage, Storage};
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => f(&v[layout.start_offset()..][..t.elem_count()]),
        _ => candle_core::bail!("expected f32 values on the CPU"),
    }
}

/// A convolution's kernel and bias as plain f32 values, kept beside the tensors on the CPU
/// for [`conv_cpu`] (the kernel in the layout its `gemm` reads).
#[derive(Debug, Clone)]
struct CpuKernel {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl CpuKernel {
    /// A convolution's kernel `[c_out, c_in, k]` as [`conv_cpu::conv1d`] reads it; `None` off
    /// the CPU.
    fn new(weight: &Tensor, bias: &Tensor) -> candle_core::Result<Option<Self>> {
        if !weight.device().is_cpu() {
            return Ok(None);
        }
        Ok(Some(Self {
            weight: values(weight)?,
            bias: values(bias)?,
        }))
    }

    /// A transposed convolution's kernel `[c_in, c_out, k]` as
    /// [`conv_cpu::conv_transpose1d`] reads it, `[c_out * k, c_in]`; `None` off the CPU.
    fn transposed(weight: &Tensor, bias: &Tensor) -> candle_core::Result<Option<Self>> {
        let (c_in, c_out, k) = weight.dims3()?;
        Self::new(&weight.reshape((c_in, c_out * k))?.t()?, bias)
    }
}

/// A tensor's values in f32, row-major, as an owned copy.
fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    with_values(t, |v| Ok(v.to_vec()))
}

/// Stride-1 convolution `[batch, c_in, len]` x `[c_out, c_in, k]` -> `[batch, c_out, len - (k -
/// 1) * dilation]`, as a sum of one `[c_out, c_in]` product per kernel tap.
///
/// The path off the CPU (which takes [`conv_cpu::conv1d`]): candle's conv1d unfolds the whole
/// input first (`len x c_in x k` values: over half a GB at the codec's full resolution); per-tap
/// products need only one shifted copy of the input at a time.
fn conv1d_by_taps(xs: &Tensor, weight: &Tensor, dilation: usize) -> candle_core::Result<Tensor> {
    let (_, _, len) = xs.dims3()?;
    let k = weight.dim(2)?;
    let span = (k - 1) * dilation;
    if len <= span {
        candle_core::bail!("conv1d: input of {len} samples is shorter than the kernel span");
    }
    let out_len = len - span;
    let mut acc: Option<Tensor> = None;
    for j in 0..k {
        let tap = weight.narrow(2, j, 1)?.squeeze(2)?;
        let shifted = xs.narrow(2, j * dilation, out_len)?.contiguous()?;
        let part = tap.broadcast_matmul(&shifted)?;
        acc = Some(match acc {
            Some(a) => (a + part)?,
            None => part,
        });
    }
    acc.ok_or_else(|| candle_core::Error::Msg("conv1d: empty kernel".into()))
}

/// `EncodecConvTranspose1d`: an upsampling transposed convolution that trims its overhang.
#[derive(Debug, Clone)]
struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    /// On the CPU, the kernel for [`conv_cpu::conv_transpose1d`]: `[c_out * k, c_in]`.
    cpu: Option<CpuKernel>,
    stride: usize,
    trim_left: usize,
    trim_right: usize,
}

impl ConvTranspose1d {
    fn load(
        vb: VarBuilder,
        cfg: &EncodecConfig,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let vb = vb.pp("conv");
        let padding_total = kernel - stride;
        let trim_right = if cfg.use_causal_conv {
            (padding_total as f64 * cfg.trim_right_ratio).ceil() as usize
        } else {
            padding_total / 2
        };
        let weight = weight_norm_kernel(&vb, (c_in, c_out, kernel))?;
        let bias = vb.get(c_out, "bias")?.reshape((1, c_out, 1))?;
        Ok(Self {
            cpu: CpuKernel::transposed(&weight, &bias)?,
            weight,
            bias,
            stride,
            trim_left: padding_total - trim_right,
            trim_right,
        })
    }
}

/// Transposed 1-d convolution `[batch, c_in, t]` x `[c_in, c_out, k]` -> `[batch, c_out,
/// (t - 1) * stride + k]`, no padding.
///
/// candle 0.11.1's CPU `conv_transpose1d` gives wrong results for batches larger than one, so
/// when the kernel is a whole number of strides (always in EnCodec: kernel = 2 * stride) this
/// is one matmul followed by an overlap-add of `k / stride` shifted copies; otherwise each batch
/// item goes through candle separately.
pub fn conv_transpose1d(
    xs: &Tensor,
    weight: &Tensor,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let (b, c_in, t) = xs.dims3()?;
    let (w_in, c_out, k) = weight.dims3()?;
    if c_in != w_in {
        candle_core::bail!("conv_transpose1d: input has {c_in} channels, kernel expects {w_in}");
    }
    if stride == 0 || k % stride != 0 {
        let items = (0..b)
            .map(|i| {
                xs.narrow(0, i, 1)?
                    .conv_transpose1d(weight, 0, 0, stride, 1, 1)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Tensor::cat(&items, 0);
    }
    let r = k / stride;
    // cols[b, t, c, q, u]: the contribution of input step t to output sample (t + q) * stride + u.
    let cols = xs
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, c_in))?
        .matmul(&weight.reshape((c_in, c_out * k))?)?
        .reshape((b, t, c_out, r, stride))?;
    let mut out: Option<Tensor> = None;
    for q in 0..r {
        let part = cols
            .narrow(3, q, 1)?
            .squeeze(3)?
            .permute((0, 2, 1, 3))?
            .pad_with_zeros(2, q, r - 1 - q)?;
        out = Some(match out {
            Some(acc) => (acc + part)?,
            None => part,
        });
    }
    let out = out.ok_or_else(|| candle_core::Error::Msg("empty transposed kernel".into()))?;
    out.reshape((b, c_out, (t + r - 1) * stride))
}

impl Module for ConvTranspose1d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, false)
    }
}

impl ConvTranspose1d {
    /// The transposed convolution of `xs`, or of ELU(`xs`) when `elu` (on the CPU the ELU is
    /// applied inside [`conv_cpu::conv_transpose1d`]'s chunks).
    fn forward_with(&self, xs: &Tensor, elu: bool) -> candle_core::Result<Tensor> {
        let (b, c_in, t) = xs.dims3()?;
        let (w_in, c_out, k) = self.weight.dims3()?;
        let stride = self.stride;
        if let (Some(cpu), true) = (&self.cpu, stride > 0 && k % stride == 0) {
            if c_in != w_in {
                candle_core::bail!(
                    "conv_transpose1d: input has {c_in} channels, kernel expects {w_in}"
                );
            }
            let full = (t + k / stride - 1) * stride;
            let len = full
                .checked_sub(self.trim_left + self.trim_right)
                .ok_or_else(|| {
                    candle_core::Error::Msg("conv_transpose1d: input too short".into())
                })?;
            return with_values(xs, |x| {
                let mut out = Vec::with_capacity(b * c_out * len);
                for i in 0..b {
                    out.extend(conv_cpu::conv_transpose1d(
                        &x[i * c_in * t..][..c_in * t],
                        c_in,
                        &cpu.weight,
                        c_out,
                        k,
                        stride,
                        &cpu.bias,
                        self.trim_left,
                        len,
                        elu,
                    ));
                }
                Tensor::from_vec(out, (b, c_out, len), xs.device())
            });
        }
        let xs = if elu { xs.elu(1.0)? } else { xs.clone() };
        let ys = conv_transpose1d(&xs, &self.weight, stride)?.broadcast_add(&self.bias)?;
        let len = ys.dim(D::Minus1)?;
        ys.narrow(2, self.trim_left, len - self.trim_left - self.trim_right)
    }
}

/// `EncodecLSTM`: a stacked LSTM over time with a skip connection around it.
#[derive(Debug, Clone)]
struct Lstm {
    /// Per layer: input weights transposed `[dim, 4*dim]`, recurrent weights as stored
    /// `[4*dim, dim]`, and the summed biases `[4*dim]`; gates in PyTorch's order i, f, g, o.
    layers: Vec<(Tensor, Tensor, Tensor)>,
    dim: usize,
}

impl Lstm {
    fn load(vb: VarBuilder, dim: usize, num_layers: usize) -> candle_core::Result<Self> {
        let vb = vb.pp("lstm");
        let layers = (0..num_layers)
            .map(|l| {
                let w_ih = vb.get((4 * dim, dim), &format!("weight_ih_l{l}"))?;
                let w_hh = vb.get((4 * dim, dim), &format!("weight_hh_l{l}"))?;
                let b = (vb.get(4 * dim, &format!("bias_ih_l{l}"))?
                    + vb.get(4 * dim, &format!("bias_hh_l{l}"))?)?;
                Ok((w_ih.t()?.contiguous()?, w_hh.contiguous()?, b))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, dim })
    }
}

/// An LSTM's state between chunks of a sequence: `(h, c)` per layer, each `[batch, dim]`.
type LstmState = Vec<(Tensor, Tensor)>;

impl Lstm {
    /// The zero state a sequence starts from.
    fn start(&self, batch: usize, device: &Device) -> candle_core::Result<LstmState> {
        let zeros = Tensor::zeros((batch, self.dim), DType::F32, device)?;
        Ok(vec![(zeros.clone(), zeros); self.layers.len()])
    }

    /// `[batch, dim, time]` in, same out, going on from `state` and leaving it where the chunk
    /// ends: a sequence fed in chunks gives what it gives whole.
    fn forward_from(&self, xs: &Tensor, state: &mut LstmState) -> candle_core::Result<Tensor> {
        let input = xs.transpose(1, 2)?.contiguous()?; // [b, t, dim]
        if xs.device().is_cpu() && xs.dim(0)? <= super::gemv::MAX_ROWS {
            self.forward_cpu(input, state)
        } else {
            self.forward_ops(input, state)
        }
    }

    /// [`Lstm::forward_from`] in candle ops (any device), `input` `[b, t, dim]`.
    fn forward_ops(&self, input: Tensor, state: &mut LstmState) -> candle_core::Result<Tensor> {
        let (b, t, _) = input.dims3()?;
        let mut seq = input.clone();
        let h_dim = self.dim;
        for ((w_ih, w_hh, bias), (h, c)) in self.layers.iter().zip(state.iter_mut()) {
            // The input projection of every step at once; only the recurrence is sequential.
            let pre = seq
                .reshape((b * t, h_dim))?
                .matmul(w_ih)?
                .broadcast_add(bias)?
                .reshape((b, t, 4 * h_dim))?;
            let mut outs = Vec::with_capacity(t);
            for step in 0..t {
                // One [batch, dim] x [dim, 4*dim] product per step: memory-bound, so on the
                // CPU it takes the streaming matrix-vector path when the batch is small.
                let recurrent = match super::gemv::matmul_t(h, w_hh)? {
                    Some(r) => r,
                    None => h.matmul(&w_hh.t()?)?,
                };
                let gates = (pre.i((.., step, ..))? + recurrent)?;
                let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, h_dim)?)?;
                let f = candle_nn::ops::sigmoid(&gates.narrow(1, h_dim, h_dim)?)?;
                let g = gates.narrow(1, 2 * h_dim, h_dim)?.tanh()?;
                let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * h_dim, h_dim)?)?;
                *c = ((f * &*c)? + (i * g)?)?;
                *h = (o * c.tanh()?)?;
                outs.push(h.clone());
            }
            seq = Tensor::stack(&outs, 1)?;
        }
        (seq + input)?.transpose(1, 2)?.contiguous()
    }
}

impl Lstm {
    /// [`Lstm::forward_from`] on the CPU for a few sequences, `input` `[b, t, dim]`: each
    /// step's recurrent product on the matrix-vector path, then the gates and both states in
    /// one pass over plain values (a dozen candle ops a step made the recurrence twice as slow
    /// as the product).
    fn forward_cpu(&self, input: Tensor, state: &mut LstmState) -> candle_core::Result<Tensor> {
        let (b, t, dim) = input.dims3()?;
        let device = input.device().clone();
        let mut seq = input.clone();
        for ((w_ih, w_hh, bias), (h, c)) in self.layers.iter().zip(state.iter_mut()) {
            let pre = seq
                .reshape((b * t, dim))?
                .matmul(w_ih)?
                .broadcast_add(bias)?;
            let mut hv = values(h)?;
            let mut cv = values(c)?;
            let mut out = vec![0f32; b * t * dim];
            with_values(&pre, |pre| {
                for step in 0..t {
                    let hs = Tensor::from_slice(&hv, (b, dim), &device)?;
                    let recurrent = match super::gemv::matmul_t(&hs, w_hh)? {
                        Some(r) => r,
                        None => hs.matmul(&w_hh.t()?)?,
                    };
                    with_values(&recurrent, |rec| {
                        for i in 0..b {
                            let gates = &pre[(i * t + step) * 4 * dim..][..4 * dim];
                            let rec = &rec[i * 4 * dim..][..4 * dim];
                            let g =
                                |gate: usize, j: usize| gates[gate * dim + j] + rec[gate * dim + j];
                            for j in 0..dim {
                                let input_gate = sigmoid(g(0, j));
                                let forget = sigmoid(g(1, j));
                                let cell = g(2, j).tanh();
                                let output = sigmoid(g(3, j));
                                let cj = forget * cv[i * dim + j] + input_gate * cell;
                                cv[i * dim + j] = cj;
                                hv[i * dim + j] = output * cj.tanh();
                            }
                            out[(i * t + step) * dim..][..dim]
                                .copy_from_slice(&hv[i * dim..][..dim]);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
            *h = Tensor::from_vec(hv, (b, dim), &device)?;
            *c = Tensor::from_vec(cv, (b, dim), &device)?;
            seq = Tensor::from_vec(out, (b, t, dim), &device)?;
        }
        (seq + input)?.transpose(1, 2)?.contiguous()
    }
}

/// The logistic function, as torch's LSTM cell applies it.
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl Module for Lstm {
    /// `[batch, dim, time]` in, same out.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut state = self.start(xs.dim(0)?, xs.device())?;
        self.forward_from(xs, &mut state)
    }
}

/// SEANet residual block: ELU, conv(k, dilation), ELU, conv(1), plus a shortcut.
#[derive(Debug, Clone)]
struct ResnetBlock {
    conv1: Conv1d,
    conv2: Conv1d,
    shortcut: Option<Conv1d>,
}

impl ResnetBlock {
    fn load(
        vb: VarBuilder,
        cfg: &EncodecConfig,
        dim: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let hidden = dim / cfg.compress;
        // The block's module list is [ELU, conv, ELU, conv]: the convolutions sit at 1 and 3.
        let conv1 = Conv1d::load(
            vb.pp("block.1"),
            cfg,
            dim,
            hidden,
            cfg.residual_kernel_size,
            1,
            dilation,
        )?;
        let conv2 = Conv1d::load(vb.pp("block.3"), cfg, hidden, dim, 1, 1, 1)?;
        let shortcut = if cfg.use_conv_shortcut {
            Some(Conv1d::load(vb.pp("shortcut"), cfg, dim, dim, 1, 1, 1)?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            shortcut,
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward_with(xs, true, None)?;
        match &self.shortcut {
            Some(conv) => self.conv2.forward_with(&h, true, Some(&conv.forward(xs)?)),
            None => self.conv2.forward_with(&h, true, Some(xs)),
        }
    }
}

/// One entry of the SEANet `layers` list (ELUs are entries too, which keeps indices aligned
/// with the checkpoint's key names).
#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv1d),
    ConvTranspose(ConvTranspose1d),
    Resnet(ResnetBlock),
    Lstm(Lstm),
    Elu,
}

impl Module for Layer {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Layer::Conv(m) => m.forward(xs),
            Layer::ConvTranspose(m) => m.forward(xs),
            Layer::Resnet(m) => m.forward(xs),
            Layer::Lstm(m) => m.forward(xs),
            Layer::Elu => xs.elu(1.0),
        }
    }
}

/// Runs `layers` in order, on a rayon worker (see `on_worker`). An ELU entry followed by a
/// convolution is applied inside that convolution (one pass over the signal instead of two).
fn run(layers: &[Layer], xs: &Tensor) -> candle_core::Result<Tensor> {
    super::on_worker(|| run_here(layers, xs))
}

/// [`run`] on the calling thread.
fn run_here(layers: &[Layer], xs: &Tensor) -> candle_core::Result<Tensor> {
    let mut xs = xs.clone();
    let mut elu = false;
    for layer in layers {
        if elu && !matches!(layer, Layer::Conv(_) | Layer::ConvTranspose(_)) {
            xs = xs.elu(1.0)?;
            elu = false;
        }
        xs = match layer {
            Layer::Elu => {
                elu = true;
                continue;
            }
            Layer::Conv(m) => m.forward_with(&xs, elu, None)?,
            Layer::ConvTranspose(m) => m.forward_with(&xs, elu)?,
            other => other.forward(&xs)?,
        };
        elu = false;
    }
    if elu {
        xs = xs.elu(1.0)?;
    }
    Ok(xs)
}

fn load_encoder(vb: VarBuilder, cfg: &EncodecConfig) -> candle_core::Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let at = |i: usize| vb.pp(format!("layers.{i}"));
    layers.push(Layer::Conv(Conv1d::load(
        at(0),
        cfg,
        cfg.audio_channels,
        cfg.num_filters,
        cfg.kernel_size,
        1,
        1,
    )?));
    let mut scale = 1;
    for &ratio in cfg.upsampling_ratios.iter().rev() {
        let dim = scale * cfg.num_filters;
        for j in 0..cfg.num_residual_layers {
            let dilation = cfg.dilation_growth_rate.pow(j as u32);
            layers.push(Layer::Resnet(ResnetBlock::load(
                at(layers.len()),
                cfg,
                dim,
                dilation,
            )?));
        }
        layers.push(Layer::Elu);
        layers.push(Layer::Conv(Conv1d::load(
            at(layers.len()),
            cfg,
            dim,
            dim * 2,
            ratio * 2,
            ratio,
            1,
        )?));
        scale *= 2;
    }
    let dim = scale * cfg.num_filters;
    layers.push(Layer::Lstm(Lstm::load(
        at(layers.len()),
        dim,
        cfg.num_lstm_layers,
    )?));
    layers.push(Layer::Elu);
    layers.push(Layer::Conv(Conv1d::load(
        at(layers.len()),
        cfg,
        dim,
        cfg.hidden_size,
        cfg.last_kernel_size,
        1,
        1,
    )?));
    Ok(layers)
}

fn load_decoder(vb: VarBuilder, cfg: &EncodecConfig) -> candle_core::Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let at = |i: usize| vb.pp(format!("layers.{i}"));
    let mut scale = 1usize << cfg.upsampling_ratios.len();
    let dim = scale * cfg.num_filters;
    layers.push(Layer::Conv(Conv1d::load(
        at(0),
        cfg,
        cfg.hidden_size,
        dim,
        cfg.kernel_size,
        1,
        1,
    )?));
    layers.push(Layer::Lstm(Lstm::load(at(1), dim, cfg.num_lstm_layers)?));
    for &ratio in &cfg.upsampling_ratios {
        let dim = scale * cfg.num_filters;
        layers.push(Layer::Elu);
        layers.push(Layer::ConvTranspose(ConvTranspose1d::load(
            at(layers.len()),
            cfg,
            dim,
            dim / 2,
            ratio * 2,
            ratio,
        )?));
        for j in 0..cfg.num_residual_layers {
            let dilation = cfg.dilation_growth_rate.pow(j as u32);
            layers.push(Layer::Resnet(ResnetBlock::load(
                at(layers.len()),
                cfg,
                dim / 2,
                dilation,
            )?));
        }
        scale /= 2;
    }
    layers.push(Layer::Elu);
    layers.push(Layer::Conv(Conv1d::load(
        at(layers.len()),
        cfg,
        cfg.num_filters,
        cfg.audio_channels,
        cfg.last_kernel_size,
        1,
        1,
    )?));
    Ok(layers)
}

/// Residual vector quantiser: one codebook `[codebook_size, dim]` per level.
#[derive(Debug, Clone)]
struct Quantizer {
    codebooks: Vec<Tensor>,
    /// Squared norms of each codebook's entries, `[1, codebook_size]`.
    norms: Vec<Tensor>,
}

impl Quantizer {
    fn load(vb: VarBuilder, cfg: &EncodecConfig) -> candle_core::Result<Self> {
        let mut codebooks = Vec::new();
        let mut norms = Vec::new();
        for q in 0..cfg.num_quantizers() {
            let embed = vb.get(
                (cfg.codebook_size, cfg.codebook_dim()),
                &format!("layers.{q}.codebook.embed"),
            )?;
            norms.push(embed.sqr()?.sum_keepdim(1)?.t()?.contiguous()?);
            codebooks.push(embed);
        }
        Ok(Self { codebooks, norms })
    }

    /// `[batch, dim, frames]` latent to `[batch, levels, frames]` u32 codes.
    fn encode(&self, latent: &Tensor, levels: usize) -> candle_core::Result<Tensor> {
        let (b, dim, t) = latent.dims3()?;
        let mut residual = latent.transpose(1, 2)?.reshape((b * t, dim))?;
        let mut codes = Vec::with_capacity(levels);
        for (embed, norm) in self.codebooks.iter().zip(&self.norms).take(levels) {
            // ||x||^2 is the same for every entry of a row, so the nearest entry minimises
            // ||e||^2 - 2 x.e
            let dist = norm.broadcast_sub(&(residual.matmul(&embed.t()?)? * 2.0)?)?;
            let ids = dist.argmin(D::Minus1)?;
            residual = (residual - embed.index_select(&ids, 0)?)?;
            codes.push(ids.reshape((b, t))?);
        }
        Tensor::stack(&codes, 1)
    }

    /// `[batch, levels, frames]` codes to the summed `[batch, dim, frames]` latent.
    fn decode(&self, codes: &Tensor) -> candle_core::Result<Tensor> {
        let (b, levels, t) = codes.dims3()?;
        if levels > self.codebooks.len() {
            candle_core::bail!(
                "codes have {levels} codebooks but the codec has {}",
                self.codebooks.len()
            );
        }
        let codes = codes.to_dtype(DType::U32)?;
        let mut sum: Option<Tensor> = None;
        for (level, embed) in self.codebooks.iter().enumerate().take(levels) {
            let ids = codes.i((.., level, ..))?.flatten_all()?;
            let q = embed.index_select(&ids, 0)?;
            sum = Some(match sum {
                Some(s) => (s + q)?,
                None => q,
            });
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("no codebooks to decode".into()))?;
        let dim = sum.dim(1)?;
        sum.reshape((b, t, dim))?.transpose(1, 2)?.contiguous()
    }
}

/// The EnCodec codec: waveform to codes and back.
#[derive(Debug, Clone)]
pub struct Encodec {
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    quantizer: Quantizer,
    config: EncodecConfig,
    device: Device,
}

impl Encodec {
    /// Loads from `vb` at the `audio_encoder` prefix of a MusicGen checkpoint.
    pub fn load(vb: VarBuilder, config: &EncodecConfig) -> candle_core::Result<Self> {
        config.validate()?;
        let vb = vb.set_dtype(DType::F32);
        Ok(Self {
            encoder: load_encoder(vb.pp("encoder"), config)?,
            decoder: load_decoder(vb.pp("decoder"), config)?,
            quantizer: Quantizer::load(vb.pp("quantizer"), config)?,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    /// The configuration the codec was built from.
    pub fn config(&self) -> &EncodecConfig {
        &self.config
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.config.hop_length()
    }

    /// Audio sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.config.sampling_rate
    }

    /// Codebooks available (quantiser levels).
    pub fn num_codebooks(&self) -> usize {
        self.quantizer.codebooks.len()
    }

    /// The SEANet encoder alone: `[batch, 1, samples]` audio to the `[batch, hidden, frames]`
    /// latent before quantisation.
    pub fn encode_latent(&self, audio: &Tensor) -> candle_core::Result<Tensor> {
        let audio = audio.to_device(&self.device)?.to_dtype(DType::F32)?;
        if audio.dims3()?.1 != self.config.audio_channels {
            candle_core::bail!("EnCodec expects audio shaped [batch, 1, samples]");
        }
        run(&self.encoder, &audio)
    }

    /// Encodes `[batch, 1, samples]` audio to `[batch, num_codebooks, frames]` i64 codes,
    /// `frames = ceil(samples / hop_length)`. `num_codebooks` may be fewer than the codec has.
    pub fn encode(&self, audio: &Tensor, num_codebooks: usize) -> candle_core::Result<Tensor> {
        if num_codebooks == 0 || num_codebooks > self.num_codebooks() {
            candle_core::bail!(
                "cannot encode with {num_codebooks} codebooks: the codec has {}",
                self.num_codebooks()
            );
        }
        if audio.dim(D::Minus1)? == 0 {
            candle_core::bail!("cannot encode empty audio");
        }
        let latent = self.encode_latent(audio)?;
        self.quantizer
            .encode(&latent, num_codebooks)?
            .to_dtype(DType::I64)
    }

    /// Decodes `[batch, codebooks, frames]` codes (any integer dtype) to `[batch, 1, frames *
    /// hop_length]` f32 audio.
    pub fn decode(&self, codes: &Tensor) -> candle_core::Result<Tensor> {
        let codes = self.checked_codes(codes)?;
        let latent = self.quantizer.decode(&codes)?;
        run(&self.decoder, &latent)
    }

    /// `codes` on the codec's device, refused when empty or outside the codebooks.
    fn checked_codes(&self, codes: &Tensor) -> candle_core::Result<Tensor> {
        let codes = codes.to_device(&self.device)?;
        if codes.elem_count() == 0 {
            candle_core::bail!("cannot decode zero frames");
        }
        let all = codes.to_dtype(DType::I64)?.flatten_all()?;
        let max = all.max(0)?.to_scalar::<i64>()?;
        let min = all.min(0)?.to_scalar::<i64>()?;
        if min < 0 || max >= self.config.codebook_size as i64 {
            candle_core::bail!(
                "codes must lie in 0..{}, got values from {min} to {max}",
                self.config.codebook_size
            );
        }
        Ok(codes)
    }
}

/// Decodes codes as they arrive, to the audio the whole codes decode to (see
/// [`Encodec::decode_stream`]).
///
/// The decoder is a first convolution, an LSTM, then convolutions and upsampling. The
/// convolutions look a few frames ahead and behind (they are not causal in MusicGen's codec),
/// the LSTM only behind, through its state. So: the first convolution runs over the new frames
/// with the context it reaches, the LSTM goes on from its state, and the rest runs over the
/// LSTM's new frames with [`DecodeStream::context`] frames on either side, keeping only the
/// middle. A frame becomes audio once the frames it reaches ahead have arrived (or at
/// [`DecodeStream::finish`], with the end padding a whole decode gives).
pub struct DecodeStream<'c> {
    codec: &'c Encodec,
    first: &'c Conv1d,
    lstm: &'c Lstm,
    rest: &'c [Layer],
    /// Frames the first convolution reaches behind and ahead.
    first_reach: (usize, usize),
    /// Frames the rest reaches on either side (rounded up, plus one).
    context: usize,
    /// Latent frames from `latent_from` on, `[batch, hidden, n]`.
    latent: Option<Tensor>,
    latent_from: usize,
    latent_len: usize,
    lstm_state: Option<LstmState>,
    /// LSTM outputs from `lstm_from` on; `lstm_len` of them so far.
    lstm_out: Option<Tensor>,
    lstm_from: usize,
    lstm_len: usize,
    /// Frames turned into audio so far.
    emitted: usize,
}

/// Appends `new` to `buffer` along time.
fn append(buffer: &mut Option<Tensor>, new: Tensor) -> candle_core::Result<()> {
    *buffer = Some(match buffer.take() {
        Some(old) => Tensor::cat(&[&old, &new], 2)?,
        None => new,
    });
    Ok(())
}

/// Drops frames before `keep_from` from `buffer`, which starts at frame `*from`.
fn drop_before(
    buffer: &mut Option<Tensor>,
    from: &mut usize,
    keep_from: usize,
) -> candle_core::Result<()> {
    if let Some(t) = buffer.as_mut() {
        let cut = keep_from.saturating_sub(*from).min(t.dim(2)?);
        if cut > 0 {
            *t = t.narrow(2, cut, t.dim(2)? - cut)?;
            *from += cut;
        }
    }
    Ok(())
}

impl Encodec {
    /// A decoder that takes codes a few frames at a time (see [`DecodeStream`]).
    pub fn decode_stream(&self) -> candle_core::Result<DecodeStream<'_>> {
        let (Some(Layer::Conv(first)), Some(Layer::Lstm(lstm))) =
            (self.decoder.first(), self.decoder.get(1))
        else {
            candle_core::bail!("the codec's decoder does not start with a convolution and an LSTM");
        };
        let span = (first.kernel - 1) * first.dilation;
        if first.stride != 1 {
            candle_core::bail!("the codec's first decoder convolution is strided");
        }
        let first_reach = if first.causal {
            (span, 0)
        } else {
            (span - span / 2, span / 2)
        };
        // What the rest reaches, in LSTM frames: a convolution its span at the resolution it
        // runs at, a transposed one two of its input steps. Counted whole on both sides, so
        // the bound holds for causal and non-causal codecs alike.
        let mut samples_per_frame = 1.0;
        let mut reach = 0.0;
        let conv_reach =
            |c: &Conv1d, per_frame: f64| ((c.kernel - 1) * c.dilation) as f64 / per_frame;
        for layer in &self.decoder[2..] {
            match layer {
                Layer::Conv(c) => reach += conv_reach(c, samples_per_frame),
                Layer::Resnet(r) => {
                    reach += conv_reach(&r.conv1, samples_per_frame)
                        + conv_reach(&r.conv2, samples_per_frame)
                        + r.shortcut
                            .as_ref()
                            .map_or(0.0, |c| conv_reach(c, samples_per_frame));
                }
                Layer::ConvTranspose(t) => {
                    reach += 2.0 / samples_per_frame;
                    samples_per_frame *= t.stride as f64;
                }
                Layer::Lstm(_) => candle_core::bail!("the codec's decoder has a second LSTM"),
                Layer::Elu => {}
            }
        }
        Ok(DecodeStream {
            codec: self,
            first,
            lstm,
            rest: &self.decoder[2..],
            first_reach,
            context: reach.ceil() as usize + 1,
            latent: None,
            latent_from: 0,
            latent_len: 0,
            lstm_state: None,
            lstm_out: None,
            lstm_from: 0,
            lstm_len: 0,
            emitted: 0,
        })
    }
}

impl DecodeStream<'_> {
    /// Frames the upsampling part reaches on either side: how far audio lags the codes, and
    /// how many frames each chunk decodes again for context.
    pub fn context(&self) -> usize {
        self.context + self.first_reach.1
    }

    /// Frames received so far.
    pub fn frames_in(&self) -> usize {
        self.latent_len
    }

    /// Frames turned into audio so far.
    pub fn frames_out(&self) -> usize {
        self.emitted
    }

    /// Takes the next codes `[batch, codebooks, frames]` and returns the audio that is now
    /// final, `[batch, 1, samples]` (possibly zero samples).
    pub fn push(&mut self, codes: &Tensor) -> candle_core::Result<Tensor> {
        self.advance(Some(codes), false)
    }

    /// Ends the stream: the rest of the audio, with the end padding a whole decode uses.
    pub fn finish(&mut self) -> candle_core::Result<Tensor> {
        self.advance(None, true)
    }

    fn advance(&mut self, codes: Option<&Tensor>, last: bool) -> candle_core::Result<Tensor> {
        // Many small operations a push: on a rayon worker (see `on_worker`).
        super::on_worker(|| self.advance_here(codes, last))
    }

    /// [`DecodeStream::advance`] on the calling thread.
    fn advance_here(&mut self, codes: Option<&Tensor>, last: bool) -> candle_core::Result<Tensor> {
        if let Some(codes) = codes {
            if codes.dim(2)? > 0 {
                let latent = self
                    .codec
                    .quantizer
                    .decode(&self.codec.checked_codes(codes)?)?;
                self.latent_len += latent.dim(2)?;
                append(&mut self.latent, latent)?;
            }
        }
        let Some(latent) = self.latent.clone() else {
            candle_core::bail!("no codes to decode");
        };
        let batch = latent.dim(0)?;
        // The first convolution, for the frames whose look-ahead has arrived.
        let ready = if last {
            self.latent_len
        } else {
            self.latent_len.saturating_sub(self.first_reach.1)
        };
        if ready > self.lstm_len {
            let from = self.lstm_len.saturating_sub(self.first_reach.0);
            let window = latent
                .narrow(2, from - self.latent_from, self.latent_len - from)?
                .contiguous()?;
            let out = self.first.forward(&window)?;
            let new = out.narrow(2, self.lstm_len - from, ready - self.lstm_len)?;
            let state = match &mut self.lstm_state {
                Some(s) => s,
                None => self
                    .lstm_state
                    .insert(self.lstm.start(batch, latent.device())?),
            };
            let new = self.lstm.forward_from(&new, state)?;
            append(&mut self.lstm_out, new)?;
            self.lstm_len = ready;
            drop_before(
                &mut self.latent,
                &mut self.latent_from,
                self.lstm_len.saturating_sub(self.first_reach.0),
            )?;
        }
        // The rest, for the frames whose context on both sides is known.
        let hop = self.codec.hop_length();
        let ready = if last {
            self.lstm_len
        } else {
            self.lstm_len.saturating_sub(self.context)
        };
        let (Some(lstm_out), true) = (&self.lstm_out, ready > self.emitted) else {
            return Tensor::zeros(
                (batch, self.codec.config.audio_channels, 0),
                DType::F32,
                latent.device(),
            );
        };
        let from = self.emitted.saturating_sub(self.context);
        let window = lstm_out
            .narrow(2, from - self.lstm_from, self.lstm_len - from)?
            .contiguous()?;
        let audio = run(self.rest, &window)?;
        let audio = audio.narrow(2, (self.emitted - from) * hop, (ready - self.emitted) * hop)?;
        self.emitted = ready;
        drop_before(
            &mut self.lstm_out,
            &mut self.lstm_from,
            self.emitted.saturating_sub(self.context),
        )?;
        Ok(audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;

    #[test]
    fn conv_by_taps_matches_candle() {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1., (1, 64, 65_536 + 10), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (2, 64, 3), &dev).unwrap();
        let ours = conv1d_by_taps(&xs, &w, 2).unwrap();
        let candle = xs.conv1d(&w, 0, 1, 2, 1).unwrap();
        assert_eq!(ours.dims(), candle.dims());
        let diff = max_abs_diff(&ours, &candle);
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn chunked_transposed_conv_matches_the_whole_one() {
        let dev = Device::Cpu;
        // 10000 steps: ten chunks of conv_cpu::CHUNK input steps.
        let (c_in, c_out, stride, t) = (2, 64, 4, 10_000);
        let xs = Tensor::randn(0f32, 1., (2, c_in, t), &dev).unwrap();
        let weight = Tensor::randn(0f32, 1., (c_in, c_out, 2 * stride), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., (1, c_out, 1), &dev).unwrap();
        let conv = ConvTranspose1d {
            cpu: CpuKernel::transposed(&weight, &bias).unwrap(),
            weight,
            bias,
            stride,
            trim_left: 2,
            trim_right: 2,
        };
        let whole = conv_transpose1d(&xs, &conv.weight, stride)
            .unwrap()
            .broadcast_add(&conv.bias)
            .unwrap();
        let len = whole.dim(2).unwrap();
        let whole = whole.narrow(2, 2, len - 4).unwrap();
        let chunked = conv.forward(&xs).unwrap();
        assert_eq!(chunked.dims(), whole.dims());
        let diff = max_abs_diff(&chunked, &whole);
        assert!(diff < 1e-5, "max difference {diff}");
    }

    /// A [`Conv1d`] with random weights (stride 1, no padding: `forward_with` pads, these
    /// tests call the padded-input paths directly).
    fn random_conv(c_in: usize, c_out: usize, k: usize, dilation: usize) -> Conv1d {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1., (1, c_out, 1), &dev).unwrap();
        Conv1d {
            cpu: CpuKernel::new(&weight, &bias).unwrap(),
            weight,
            bias,
            stride: 1,
            dilation,
            kernel: k,
            causal: false,
            pad_mode: PadMode::Reflect,
        }
    }

    #[test]
    fn cpu_conv_with_elu_and_residual_matches_candle_ops() {
        let dev = Device::Cpu;
        // Output channels on both sides of the direct path's limit, 1-tap kernels (no
        // unfolding), dilations, lengths across several chunks and shorter than one.
        for (c_in, c_out, k, stride, dilation, len) in [
            (64, 1, 7, 1, 1, 3000),
            (3, 2, 3, 1, 2, 50),
            (16, 3, 3, 1, 1, 2500),
            (8, 32, 1, 1, 1, 1030),
            (32, 16, 3, 1, 4, 4100),
            (4, 8, 8, 4, 1, 9001),
            (1, 2, 10, 5, 1, 333),
            (6, 5, 1, 2, 1, 2049),
        ] {
            let mut conv = random_conv(c_in, c_out, k, dilation);
            conv.stride = stride;
            let xs = Tensor::randn(0f32, 1., (2, c_in, len), &dev).unwrap();
            let out_len = (len - (k - 1) * dilation - 1) / stride + 1;
            let residual = Tensor::randn(0f32, 1., (2, c_out, out_len), &dev).unwrap();
            let want = (xs
                .elu(1.0)
                .unwrap()
                .conv1d(&conv.weight, 0, stride, dilation, 1)
                .unwrap()
                .broadcast_add(&conv.bias)
                .unwrap()
                + &residual)
                .unwrap();
            let got = conv.forward_cpu(&xs, true, Some(&residual)).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff < 1e-4,
                "c_in {c_in} c_out {c_out} k {k} stride {stride}: {diff}"
            );
            let plain = conv.forward_cpu(&xs, false, None).unwrap();
            let want = xs
                .conv1d(&conv.weight, 0, stride, dilation, 1)
                .unwrap()
                .broadcast_add(&conv.bias)
                .unwrap();
            let diff = max_abs_diff(&plain, &want);
            assert!(
                diff < 1e-4,
                "no ELU, c_in {c_in} c_out {c_out} k {k}: {diff}"
            );
        }
    }

    #[test]
    fn cpu_transposed_conv_with_elu_matches_candle_per_item() {
        let dev = Device::Cpu;
        // Two and three strides a kernel, steps across chunk boundaries, trims on both sides.
        for (c_in, c_out, stride, r, t, trim) in [
            (4, 3, 4, 2, 2100, (2, 2)),
            (3, 2, 2, 3, 40, (3, 1)),
            (8, 5, 5, 2, 1025, (0, 5)),
        ] {
            let k = r * stride;
            let weight = Tensor::randn(0f32, 0.3, (c_in, c_out, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., (1, c_out, 1), &dev).unwrap();
            let conv = ConvTranspose1d {
                cpu: CpuKernel::transposed(&weight, &bias).unwrap(),
                weight,
                bias,
                stride,
                trim_left: trim.0,
                trim_right: trim.1,
            };
            let xs = Tensor::randn(0f32, 1., (2, c_in, t), &dev).unwrap();
            let got = conv.forward_with(&xs, true).unwrap();
            for i in 0..2 {
                let one = xs
                    .narrow(0, i, 1)
                    .unwrap()
                    .elu(1.0)
                    .unwrap()
                    .conv_transpose1d(&conv.weight, 0, 0, stride, 1, 1)
                    .unwrap()
                    .broadcast_add(&conv.bias)
                    .unwrap();
                let full = one.dim(2).unwrap();
                let want = one.narrow(2, trim.0, full - trim.0 - trim.1).unwrap();
                let diff = max_abs_diff(&got.narrow(0, i, 1).unwrap(), &want);
                assert!(diff < 1e-4, "stride {stride} r {r} item {i}: {diff}");
            }
        }
    }

    #[test]
    fn elu_keeps_f32_precision_near_zero() {
        let xs: Vec<f32> = vec![-1e-9, -3e-6, -0.01, -0.5, -3.0, -90.0, 0.0, 2.5];
        let mut got = vec![0f32; xs.len()];
        conv_cpu::elu_for_tests(&xs, &mut got);
        for (x, g) in xs.iter().zip(&got) {
            let want = if *x < 0.0 { x.exp_m1() } else { *x };
            assert!(
                (g - want).abs() <= want.abs() * 2e-7,
                "elu({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn cpu_lstm_matches_candle_ops_across_chunks() {
        let dev = Device::Cpu;
        let dim = 8;
        let layers = (0..2)
            .map(|_| {
                let w = |s: (usize, usize)| Tensor::randn(0f32, 0.4, s, &dev).unwrap();
                (
                    w((4 * dim, dim)).t().unwrap().contiguous().unwrap(),
                    w((4 * dim, dim)),
                    Tensor::randn(0f32, 0.4, 4 * dim, &dev).unwrap(),
                )
            })
            .collect();
        let lstm = Lstm { layers, dim };
        let xs = Tensor::randn(0f32, 1., (2, 9, dim), &dev).unwrap();
        let mut ops_state = lstm.start(2, &dev).unwrap();
        let want = lstm.forward_ops(xs.clone(), &mut ops_state).unwrap();
        // In two chunks, carrying the state.
        let mut state = lstm.start(2, &dev).unwrap();
        let a = lstm
            .forward_cpu(xs.narrow(1, 0, 4).unwrap(), &mut state)
            .unwrap();
        let b = lstm
            .forward_cpu(xs.narrow(1, 4, 5).unwrap(), &mut state)
            .unwrap();
        let got = Tensor::cat(&[a, b], 2).unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
        for ((h, c), (h2, c2)) in state.iter().zip(&ops_state) {
            assert!(max_abs_diff(h, h2) < 1e-5 && max_abs_diff(c, c2) < 1e-5);
        }
    }

    #[test]
    fn overlap_add_matches_candle_per_item() {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1., (3, 5, 7), &dev).unwrap();
        for (k, stride) in [(6, 3), (4, 4), (5, 2)] {
            let w = Tensor::randn(0f32, 1., (5, 4, k), &dev).unwrap();
            let ours = conv_transpose1d(&xs, &w, stride).unwrap();
            assert_eq!(ours.dims(), &[3, 4, 6 * stride + k]);
            for i in 0..3 {
                let one = xs
                    .narrow(0, i, 1)
                    .unwrap()
                    .conv_transpose1d(&w, 0, 0, stride, 1, 1)
                    .unwrap();
                let diff = max_abs_diff(&ours.narrow(0, i, 1).unwrap(), &one);
                assert!(diff < 1e-4, "k {k} stride {stride} item {i}: {diff}");
            }
        }
    }

    #[test]
    fn reflect_pad_matches_torch() {
        let dev = Device::Cpu;
        let xs = Tensor::new(&[[[1f32, 2., 3., 4.]]], &dev).unwrap();
        let p = pad1d(&xs, 2, 3, PadMode::Reflect).unwrap();
        let got: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![3., 2., 1., 2., 3., 4., 3., 2., 1.]);
        // Shorter than the padding: HF appends zeros first, reflects, then drops them.
        let xs = Tensor::new(&[[[1f32, 2.]]], &dev).unwrap();
        let p = pad1d(&xs, 3, 1, PadMode::Reflect).unwrap();
        let got: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![0., 0., 2., 1., 2., 0.]);
    }
}
