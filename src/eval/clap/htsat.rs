//! CLAP's audio encoder: HTSAT, a Swin transformer over the log-mel spectrogram folded into a
//! square image (transformers' `ClapAudioEncoder` with `enable_fusion=False`).
//!
//! Weights are read under the checkpoint's own names (`audio_model.audio_encoder.…`), so the
//! code and the checkpoint can be read side by side. Everything runs in f32.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

use super::config::AudioConfig;
use super::Activation;

/// The `-100` transformers puts between tokens a shifted window joins from opposite edges
/// (a large negative, not -inf: the softmax still sees every token).
const SHIFT_MASK: f32 = -100.0;

/// One Swin block: (shifted) window attention with a relative position bias, then an MLP, each
/// pre-normed and residual.
struct Block {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    proj: Linear,
    /// `[heads, N, N]` bias, gathered from the table once at load time.
    bias: Tensor,
    /// `[windows, N, N]` mask of a shifted block, `None` when unshifted.
    mask: Option<Tensor>,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
    heads: usize,
    /// Window side (shrunk to the resolution when the resolution is not larger).
    window: usize,
    shift: usize,
}

/// The pair-wise relative position index of a `w x w` window (Swin's
/// `create_relative_position_index`), `[N * N]` with N = w².
fn relative_position_index(w: usize) -> Vec<u32> {
    let n = w * w;
    let mut idx = Vec::with_capacity(n * n);
    for a in 0..n {
        for b in 0..n {
            let dh = (a / w) as i64 - (b / w) as i64 + w as i64 - 1;
            let dw = (a % w) as i64 - (b % w) as i64 + w as i64 - 1;
            idx.push((dh * (2 * w as i64 - 1) + dw) as u32);
        }
    }
    idx
}

/// The attention mask of a block shifted by `shift` on a padded `h x w` grid of `win` windows:
/// tokens from different regions of the rolled grid do not attend to each other.
fn shift_mask(
    h: usize,
    w: usize,
    win: usize,
    shift: usize,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let region = |i: usize, len: usize| (i >= len - win) as usize + (i >= len - shift) as usize;
    let (nh, nw, n) = (h / win, w / win, win * win);
    let mut out = Vec::with_capacity(nh * nw * n * n);
    for wy in 0..nh {
        for wx in 0..nw {
            let ids: Vec<usize> = (0..n)
                .map(|t| {
                    let (y, x) = (wy * win + t / win, wx * win + t % win);
                    region(y, h) * 3 + region(x, w)
                })
                .collect();
            for a in 0..n {
                for b in 0..n {
                    out.push(if ids[a] == ids[b] { 0.0 } else { SHIFT_MASK });
                }
            }
        }
    }
    Tensor::from_vec(out, (nh * nw, n, n), dev)
}

/// Rolls `x` along `dim` by `shift` places to the left (torch.roll with a negative shift) or,
/// with `back`, to the right.
fn roll(x: &Tensor, shift: usize, dim: usize, back: bool) -> candle_core::Result<Tensor> {
    let n = x.dim(dim)?;
    let s = if back { n - shift } else { shift };
    Tensor::cat(&[x.narrow(dim, s, n - s)?, x.narrow(dim, 0, s)?], dim)
}

impl Block {
    fn load(
        cfg: &AudioConfig,
        dim: usize,
        heads: usize,
        res: usize,
        shift: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        // set_shift_and_window_size: a grid the size of a window is one unshifted window.
        let (window, shift) = if res <= cfg.window_size {
            (res, 0)
        } else {
            (cfg.window_size, shift)
        };
        let att = vb.pp("attention");
        let sa = att.pp("self");
        let qkv = |name: &str| {
            if cfg.qkv_bias {
                candle_nn::linear(dim, dim, sa.pp(name))
            } else {
                candle_nn::linear_no_bias(dim, dim, sa.pp(name))
            }
        };
        let n = window * window;
        let table = sa.get(
            ((2 * window - 1) * (2 * window - 1), heads),
            "relative_position_bias_table",
        )?;
        let idx = Tensor::from_vec(relative_position_index(window), n * n, vb.device())?;
        let bias = table
            .index_select(&idx, 0)?
            .reshape((n, n, heads))?
            .permute((2, 0, 1))?
            .contiguous()?;
        let padded = res.div_ceil(window) * window;
        let mask = if shift > 0 {
            Some(shift_mask(padded, padded, window, shift, vb.device())?)
        } else {
            None
        };
        let hidden = (dim as f64 * cfg.mlp_ratio) as usize;
        Ok(Block {
            norm1: candle_nn::layer_norm(dim, cfg.layer_norm_eps, vb.pp("layernorm_before"))?,
            query: qkv("query")?,
            key: qkv("key")?,
            value: qkv("value")?,
            proj: candle_nn::linear(dim, dim, att.pp("output").pp("dense"))?,
            bias,
            mask,
            norm2: candle_nn::layer_norm(dim, cfg.layer_norm_eps, vb.pp("layernorm_after"))?,
            fc1: candle_nn::linear(dim, hidden, vb.pp("intermediate").pp("dense"))?,
            fc2: candle_nn::linear(hidden, dim, vb.pp("output").pp("dense"))?,
            act: Activation::parse(&cfg.hidden_act)?,
            heads,
            window,
            shift,
        })
    }

    /// `x`: `[B, res*res, C]` tokens of a `res x res` grid.
    fn forward(&self, x: &Tensor, res: usize) -> candle_core::Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let (win, n) = (self.window, self.window * self.window);
        let mut h = self.norm1.forward(x)?.reshape((b, res, res, c))?;
        // Pad the grid to whole windows (bottom and right), as Swin's maybe_pad does.
        let padded = res.div_ceil(win) * win;
        if padded != res {
            h = h
                .pad_with_zeros(1, 0, padded - res)?
                .pad_with_zeros(2, 0, padded - res)?;
        }
        if self.shift > 0 {
            h = roll(&roll(&h, self.shift, 1, false)?, self.shift, 2, false)?;
        }
        let nw = padded / win;
        // Window partition: [B*nW*nW, N, C].
        let windows = h
            .reshape(vec![b, nw, win, nw, win, c])?
            .permute([0, 1, 3, 2, 4, 5])?
            .contiguous()?
            .reshape((b * nw * nw, n, c))?;
        let attended = self.attention(&windows, b)?;
        // Window reverse.
        let mut h = attended
            .reshape(vec![b, nw, nw, win, win, c])?
            .permute([0, 1, 3, 2, 4, 5])?
            .contiguous()?
            .reshape((b, padded, padded, c))?;
        if self.shift > 0 {
            h = roll(&roll(&h, self.shift, 1, true)?, self.shift, 2, true)?;
        }
        if padded != res {
            h = h.narrow(1, 0, res)?.narrow(2, 0, res)?;
        }
        let x = (x + h.contiguous()?.reshape((b, res * res, c))?)?;
        let m = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let m = self.fc2.forward(&self.act.forward(&m)?)?;
        x + m
    }

    /// Multi-head attention inside each window: `x` is `[B*nW, N, C]`.
    fn attention(&self, x: &Tensor, batch: usize) -> candle_core::Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((bw, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let mut scores = scores.broadcast_add(&self.bias.unsqueeze(0)?)?;
        if let Some(mask) = &self.mask {
            let nw = mask.dim(0)?;
            scores = scores
                .reshape((batch, nw, self.heads, n, n))?
                .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?)?
                .reshape((bw, self.heads, n, n))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bw, n, c))?;
        self.proj.forward(&ctx)
    }
}

/// Swin's patch merging: each 2x2 group of tokens becomes one token of twice the width.
struct Merge {
    norm: LayerNorm,
    reduction: Linear,
}

impl Merge {
    fn forward(&self, x: &Tensor, res: usize) -> candle_core::Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let mut h = x.reshape((b, res, res, c))?;
        if res % 2 == 1 {
            h = h.pad_with_zeros(1, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        }
        let half = res.div_ceil(2);
        // torch.cat of x[:, row::2, col::2] for col in 0..2 for row in 0..2: the 4C features of
        // an output token are ordered (col, row), so the column parity goes first.
        let h = h
            .reshape(vec![b, half, 2, half, 2, c])?
            .permute([0, 1, 3, 4, 2, 5])?
            .contiguous()?
            .reshape((b, half * half, 4 * c))?;
        self.reduction.forward(&self.norm.forward(&h)?)
    }
}

/// One stage: blocks at one resolution, then (except the last) a patch merge.
struct Stage {
    blocks: Vec<Block>,
    merge: Option<Merge>,
    res: usize,
}

/// The HTSAT audio encoder up to its pooled output (`pooler_output`).
pub struct Htsat {
    /// BatchNorm2d over mel bins, folded to a scale and an offset per bin.
    bn_scale: Vec<f32>,
    bn_offset: Vec<f32>,
    patch: Conv2d,
    patch_norm: Option<LayerNorm>,
    stages: Vec<Stage>,
    norm: LayerNorm,
    mels: usize,
    spec_size: usize,
    freq_ratio: usize,
    grid: usize,
    device: Device,
}

impl Htsat {
    /// Loads the encoder under `vb` (`audio_model.audio_encoder`), checking that the shapes the
    /// config describes fit together.
    pub fn load(cfg: &AudioConfig, vb: VarBuilder) -> Result<Self, String> {
        let stages = cfg.depths.len();
        let bad = |m: String| Err(format!("audio_config: {m}"));
        if cfg.enable_fusion {
            return bad("enable_fusion is true; fused CLAP checkpoints are not supported (use an unfused one such as laion/larger_clap_music)".into());
        }
        if stages == 0 || cfg.num_attention_heads.len() != stages {
            return bad(format!(
                "depths ({:?}) and num_attention_heads ({:?}) must name the same stages",
                cfg.depths, cfg.num_attention_heads
            ));
        }
        if cfg.patch_stride.len() != 2
            || cfg.patch_stride[0] != cfg.patch_stride[1]
            || cfg.patch_stride[0] == 0
            || cfg.patch_size < cfg.patch_stride[0]
        {
            return bad(format!(
                "patch_stride {:?} with patch_size {} is not supported (a square stride no larger than the patch)",
                cfg.patch_stride, cfg.patch_size
            ));
        }
        if cfg.num_mel_bins == 0
            || !cfg.spec_size.is_multiple_of(cfg.num_mel_bins)
            || cfg.spec_size < cfg.num_mel_bins
        {
            return bad(format!(
                "spec_size {} must be a multiple of num_mel_bins {}",
                cfg.spec_size, cfg.num_mel_bins
            ));
        }
        if !cfg.flatten_patch_embeds || cfg.patch_embed_input_channels != 1 || cfg.window_size == 0
        {
            return bad("flatten_patch_embeds must be true, patch_embed_input_channels 1 and window_size positive".into());
        }
        let width = cfg.patch_embeds_hidden_size << (stages - 1);
        if width != cfg.hidden_size {
            return bad(format!(
                "hidden_size {} is not patch_embeds_hidden_size {} x 2^{}",
                cfg.hidden_size,
                cfg.patch_embeds_hidden_size,
                stages - 1
            ));
        }
        for (i, &h) in cfg.num_attention_heads.iter().enumerate() {
            let dim = cfg.patch_embeds_hidden_size << i;
            if h == 0 || !dim.is_multiple_of(h) {
                return bad(format!(
                    "stage {i}: width {dim} is not a multiple of {h} heads"
                ));
            }
        }
        let grid = (cfg.spec_size + 2 * ((cfg.patch_size - cfg.patch_stride[0]) / 2)
            - cfg.patch_size)
            / cfg.patch_stride[0]
            + 1;
        // A grid smaller than a window would shrink the window, but the checkpoint's bias
        // tables are sized for the configured window (transformers fails on such a config too).
        for i in 0..stages {
            let res = grid.div_ceil(1 << i);
            if res < cfg.window_size {
                return bad(format!(
                    "stage {i} works on a {res}x{res} grid, smaller than window_size {}",
                    cfg.window_size
                ));
            }
        }
        Self::load_checked(cfg, vb, grid).map_err(|e| e.to_string())
    }

    fn load_checked(cfg: &AudioConfig, vb: VarBuilder, grid: usize) -> candle_core::Result<Self> {
        let mels = cfg.num_mel_bins;
        let bn = vb.pp("batch_norm");
        let get = |name: &str| -> candle_core::Result<Vec<f32>> {
            bn.get(mels, name)?.to_dtype(DType::F32)?.to_vec1::<f32>()
        };
        let (w, b, mean, var) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        // Eval-mode batch norm is y = x * scale + offset per bin.
        let scale: Vec<f64> = (0..mels)
            .map(|i| w[i] as f64 / (var[i] as f64 + 1e-5).sqrt())
            .collect();
        let bn_offset = (0..mels)
            .map(|i| (b[i] as f64 - mean[i] as f64 * scale[i]) as f32)
            .collect();
        let bn_scale = scale.iter().map(|&s| s as f32).collect();
        let pe = vb.pp("patch_embed");
        let patch = candle_nn::conv2d(
            cfg.patch_embed_input_channels,
            cfg.patch_embeds_hidden_size,
            cfg.patch_size,
            Conv2dConfig {
                padding: (cfg.patch_size - cfg.patch_stride[0]) / 2,
                stride: cfg.patch_stride[0],
                ..Default::default()
            },
            pe.pp("proj"),
        )?;
        let patch_norm = if cfg.enable_patch_layer_norm {
            Some(candle_nn::layer_norm(
                cfg.patch_embeds_hidden_size,
                1e-5,
                pe.pp("norm"),
            )?)
        } else {
            None
        };
        let mut stages = Vec::new();
        let mut res = grid;
        let n = cfg.depths.len();
        for (i, (&depth, &heads)) in cfg.depths.iter().zip(&cfg.num_attention_heads).enumerate() {
            let dim = cfg.patch_embeds_hidden_size << i;
            let sv = vb.pp("layers").pp(i);
            let blocks = (0..depth)
                .map(|j| {
                    let shift = if j % 2 == 0 { 0 } else { cfg.window_size / 2 };
                    Block::load(cfg, dim, heads, res, shift, sv.pp("blocks").pp(j))
                })
                .collect::<candle_core::Result<_>>()?;
            let merge = if i + 1 < n {
                let d = sv.pp("downsample");
                Some(Merge {
                    norm: candle_nn::layer_norm(4 * dim, 1e-5, d.pp("norm"))?,
                    reduction: candle_nn::linear_no_bias(4 * dim, 2 * dim, d.pp("reduction"))?,
                })
            } else {
                None
            };
            stages.push(Stage { blocks, merge, res });
            res = res.div_ceil(2);
        }
        Ok(Htsat {
            bn_scale,
            bn_offset,
            patch,
            patch_norm,
            stages,
            norm: candle_nn::layer_norm(cfg.hidden_size, 1e-5, vb.pp("norm"))?,
            mels,
            spec_size: cfg.spec_size,
            freq_ratio: cfg.spec_size / mels,
            grid,
            device: vb.device().clone(),
        })
    }

    /// Mel bins the encoder expects.
    pub fn mels(&self) -> usize {
        self.mels
    }

    /// Most frames one input may have (`spec_size * freq_ratio`).
    pub fn max_frames(&self) -> usize {
        self.spec_size * self.freq_ratio
    }

    /// The pooled output (`[hidden]`) of one log-mel spectrogram, `[frames][mels]` flattened.
    pub fn forward(&self, mel: &[f32], frames: usize) -> candle_core::Result<Tensor> {
        let (mels, r) = (self.mels, self.freq_ratio);
        let width = self.max_frames();
        if frames == 0 || frames > width || mel.len() != frames * mels {
            candle_core::bail!(
                "a spectrogram of {frames} frames x {mels} mels does not fit the encoder (at most {width} frames)"
            );
        }
        // Batch norm per mel bin, then stretch the time axis to the image width (bicubic,
        // align_corners), as reshape_mel2img does.
        let normed: Vec<f32> = mel
            .iter()
            .enumerate()
            .map(|(i, &v)| v * self.bn_scale[i % mels] + self.bn_offset[i % mels])
            .collect();
        let stretched = if frames < width {
            bicubic_rows(&normed, frames, mels, width)
        } else {
            normed
        };
        // Fold [time, mel] into the square image: freq_ratio time chunks stacked along the
        // frequency axis ([1, 1, mels * r, width / r]).
        let img = Tensor::from_vec(stretched, (1, r, width / r, mels), &self.device)?
            .transpose(2, 3)?
            .contiguous()?
            .reshape((1, 1, mels * r, width / r))?;
        let x = self.patch.forward(&img)?; // [1, C, grid, grid]
        let (_, _, gh, gw) = x.dims4()?;
        if gh != self.grid || gw != self.grid {
            candle_core::bail!("patch grid {gh}x{gw}, expected {0}x{0}", self.grid);
        }
        let mut x = x.flatten_from(2)?.transpose(1, 2)?.contiguous()?; // [1, N, C]
        if let Some(norm) = &self.patch_norm {
            x = norm.forward(&x)?;
        }
        for stage in &self.stages {
            for block in &stage.blocks {
                x = block.forward(&x, stage.res)?;
            }
            if let Some(merge) = &stage.merge {
                x = merge.forward(&x, stage.res)?;
            }
        }
        // Final norm, then the average over every token (the encoder's regrouping of frequency
        // and time before its AdaptiveAvgPool1d does not change the mean).
        self.norm.forward(&x)?.mean(1)?.squeeze(0)
    }
}

/// PyTorch's bicubic interpolation (A = -0.75, align_corners=True, edge indices clamped) of
/// `rows x cols` data along the rows to `out_rows`, in f32 as torch computes it for f32 input.
/// Columns keep their positions (scale 1 gives weights 0, 1, 0, 0 exactly).
fn bicubic_rows(x: &[f32], rows: usize, cols: usize, out_rows: usize) -> Vec<f32> {
    const A: f32 = -0.75;
    let near = |t: f32| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let far = |t: f32| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let scale = if out_rows > 1 {
        (rows - 1) as f32 / (out_rows - 1) as f32
    } else {
        0.0
    };
    let mut out = vec![0f32; out_rows * cols];
    for o in 0..out_rows {
        let real = scale * o as f32;
        let i0 = real.floor();
        let t = real - i0;
        let w = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        let idx: Vec<usize> = (0..4)
            .map(|k| (i0 as i64 - 1 + k).clamp(0, rows as i64 - 1) as usize)
            .collect();
        for c in 0..cols {
            let mut acc = 0f32;
            for k in 0..4 {
                acc += x[idx[k] * cols + c] * w[k];
            }
            out[o * cols + c] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_swin_for_a_2x2_window() {
        // Swin's create_relative_position_index(2): 4 tokens, a (3*3)-entry table.
        assert_eq!(
            relative_position_index(2),
            vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    #[test]
    fn bicubic_keeps_end_points_and_constants() {
        let x = vec![1.0, 5.0, 2.0, 6.0, 3.0, 7.0];
        let y = bicubic_rows(&x, 3, 2, 5);
        assert_eq!(&y[..2], &[1.0, 5.0]);
        assert_eq!(&y[8..], &[3.0, 7.0]);
        assert!((y[4] - 2.0).abs() < 1e-6 && (y[5] - 6.0).abs() < 1e-6);
    }
}
