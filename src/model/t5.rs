//! The T5 encoder stack MusicGen uses as its text encoder, with an attention mask so that a
//! batch of prompts of different lengths gives each prompt the states it would get alone.
//!
//! Weights are read through a `VarBuilder` at the checkpoint's `text_encoder` prefix; names
//! mirror Hugging Face's `T5EncoderModel` (`encoder.block.{i}.layer.0.SelfAttention.q`, ...).
//! Relative position buckets come from the first block's `relative_attention_bias` and are
//! shared by all blocks; layer norms are T5's RMS norm (no mean, no bias); the feed-forward is
//! `relu` / `gelu` or a gated variant (`gated-gelu` uses the tanh approximation, as in HF).
//! The encoder runs in f32 whatever dtype the decoder uses.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use super::dense::{Dense, Mapping};
use super::load::Weights;
use serde::Deserialize;

/// The `text_encoder` object of MusicGen's config.json (Hugging Face `T5Config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct T5Config {
    /// Rows of the token embedding.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    /// Width of one attention head.
    #[serde(default = "default_d_kv")]
    pub d_kv: usize,
    /// Inner width of the feed-forward.
    #[serde(default = "default_d_ff")]
    pub d_ff: usize,
    /// Number of encoder blocks.
    #[serde(default = "default_num_layers")]
    pub num_layers: usize,
    /// Attention heads per block.
    #[serde(default = "default_num_heads")]
    pub num_heads: usize,
    /// Buckets of the relative position bias.
    #[serde(default = "default_num_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which all relative positions share a bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// Epsilon of the RMS layer norms.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu`, `gelu`, `gated-gelu`, `gated-silu`, ...
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
}

fn default_vocab_size() -> usize {
    32128
}
fn default_d_model() -> usize {
    512
}
fn default_d_kv() -> usize {
    64
}
fn default_d_ff() -> usize {
    2048
}
fn default_num_layers() -> usize {
    6
}
fn default_num_heads() -> usize {
    8
}
fn default_num_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff_proj() -> String {
    "relu".to_string()
}

/// Activation of the feed-forward, parsed from `feed_forward_proj` the way HF does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForwardAct {
    /// `max(0, x)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU (HF's `gelu_new`, what `gated-gelu` means).
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
}

impl T5Config {
    /// Whether the feed-forward is gated (`wi_0`, `wi_1`) and which activation it uses.
    pub fn feed_forward(&self) -> candle_core::Result<(bool, FeedForwardAct)> {
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        let (gated, name) = match parts.as_slice() {
            [name] => (false, *name),
            ["gated", name] => (true, *name),
            _ => candle_core::bail!(
                "unsupported T5 feed_forward_proj {:?} (expected e.g. relu or gated-gelu)",
                self.feed_forward_proj
            ),
        };
        let act = match (gated, name) {
            (true, "gelu") => FeedForwardAct::GeluTanh,
            (_, "gelu_new") => FeedForwardAct::GeluTanh,
            (_, "gelu") => FeedForwardAct::Gelu,
            (_, "relu") => FeedForwardAct::Relu,
            (_, "silu") | (_, "swish") => FeedForwardAct::Silu,
            _ => candle_core::bail!(
                "unsupported T5 activation {name:?} in feed_forward_proj {:?}",
                self.feed_forward_proj
            ),
        };
        Ok((gated, act))
    }
}

/// T5's layer norm: scale by the root mean square, no centring, no bias.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let xs = xs.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        xs.broadcast_mul(&self.weight)
    }
}

/// Maps a signed relative position (key minus query) to its bucket, bidirectionally, matching
/// HF's `_relative_position_bucket` including its f32 log arithmetic.
pub fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative > 0 { half } else { 0 };
    let distance = relative.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let log_ratio = (distance as f32 / max_exact as f32).ln();
        let log_span = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (log_ratio / log_span * (half - max_exact) as f32) as i64;
        bucket += large.min(half - 1);
    }
    bucket as usize
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    num_heads: usize,
    d_kv: usize,
    relative_attention_bias: Option<Embedding>,
    num_buckets: usize,
    max_distance: usize,
}

impl SelfAttention {
    fn load(
        vb: VarBuilder,
        cfg: &T5Config,
        has_bias: bool,
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = if has_bias {
            let w = vb.get(
                (cfg.relative_attention_num_buckets, cfg.num_heads),
                "relative_attention_bias.weight",
            )?;
            Some(Embedding::new(w, cfg.num_heads))
        } else {
            None
        };
        Ok(Self {
            q: Dense::load(cfg.d_model, inner, vb.pp("q"), mapping)?,
            k: Dense::load(cfg.d_model, inner, vb.pp("k"), mapping)?,
            v: Dense::load(cfg.d_model, inner, vb.pp("v"), mapping)?,
            o: Dense::load(inner, cfg.d_model, vb.pp("o"), mapping)?,
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            relative_attention_bias,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// `[1, heads, seq, seq]` relative position bias (only the first block owns the table).
    fn position_bias(&self, seq: usize, device: &Device) -> candle_core::Result<Option<Tensor>> {
        let Some(table) = &self.relative_attention_bias else {
            return Ok(None);
        };
        let mut buckets = Vec::with_capacity(seq * seq);
        for q in 0..seq as i64 {
            for k in 0..seq as i64 {
                buckets.push(
                    relative_position_bucket(k - q, self.num_buckets, self.max_distance) as u32,
                );
            }
        }
        let buckets = Tensor::from_vec(buckets, (seq, seq), device)?;
        let bias = table.forward(&buckets)?; // [seq, seq, heads]
        Ok(Some(bias.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?))
    }

    /// `bias` already holds position bias plus the padding mask, `[batch|1, heads, seq, seq]`.
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        let heads = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, self.num_heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        // T5 folds the 1/sqrt(d) scale into its weights: scores are not scaled.
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out =
            weights
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, s, self.num_heads * self.d_kv))?;
        self.o.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct FeedForward {
    wi: Dense,
    wi_gate: Option<Dense>,
    wo: Dense,
    act: FeedForwardAct,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &T5Config, mapping: Mapping) -> candle_core::Result<Self> {
        let (gated, act) = cfg.feed_forward()?;
        let (wi, wi_gate) = if gated {
            // HF: act(wi_0(x)) * wi_1(x)
            (
                Dense::load(cfg.d_model, cfg.d_ff, vb.pp("wi_0"), mapping)?,
                Some(Dense::load(cfg.d_model, cfg.d_ff, vb.pp("wi_1"), mapping)?),
            )
        } else {
            (
                Dense::load(cfg.d_model, cfg.d_ff, vb.pp("wi"), mapping)?,
                None,
            )
        };
        Ok(Self {
            wi,
            wi_gate,
            wo: Dense::load(cfg.d_ff, cfg.d_model, vb.pp("wo"), mapping)?,
            act,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.wi.forward(xs)?;
        let h = match self.act {
            FeedForwardAct::Relu => h.relu()?,
            FeedForwardAct::Gelu => h.gelu_erf()?,
            FeedForwardAct::GeluTanh => h.gelu()?,
            FeedForwardAct::Silu => h.silu()?,
        };
        let h = match &self.wi_gate {
            Some(gate) => (h * gate.forward(xs)?)?,
            None => h,
        };
        self.wo.forward(&h)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn load(
        vb: VarBuilder,
        cfg: &T5Config,
        first: bool,
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        let attn_vb = vb.pp("layer.0");
        let ff_vb = vb.pp("layer.1");
        Ok(Self {
            attn_norm: RmsNorm::load(
                attn_vb.pp("layer_norm"),
                cfg.d_model,
                cfg.layer_norm_epsilon,
            )?,
            attn: SelfAttention::load(attn_vb.pp("SelfAttention"), cfg, first, mapping)?,
            ff_norm: RmsNorm::load(ff_vb.pp("layer_norm"), cfg.d_model, cfg.layer_norm_epsilon)?,
            ff: FeedForward::load(ff_vb.pp("DenseReluDense"), cfg, mapping)?,
        })
    }

    fn forward(&self, xs: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.attn_norm.forward(xs)?, bias)?)?;
        &xs + self.ff.forward(&self.ff_norm.forward(&xs)?)?
    }
}

/// The T5 encoder: token embedding, blocks, final RMS norm.
#[derive(Debug, Clone)]
pub struct T5EncoderModel {
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: RmsNorm,
    config: T5Config,
}

impl T5EncoderModel {
    /// Loads from `vb` at the `text_encoder` prefix of a MusicGen checkpoint. The embedding is
    /// read from `shared.weight`, or `encoder.embed_tokens.weight` when only that copy of the
    /// tied pair was saved.
    pub fn load(vb: VarBuilder, config: &T5Config) -> candle_core::Result<Self> {
        Self::load_mapped(vb, config, None)
    }

    /// [`T5EncoderModel::load`] with the products' weights used in place from `weights`' memory
    /// map where they can be (f32 on the CPU; see [`Weights::mapped_f32`]).
    pub fn load_mapped(
        vb: VarBuilder,
        config: &T5Config,
        weights: Option<&Weights>,
    ) -> candle_core::Result<Self> {
        let vb = vb.set_dtype(DType::F32);
        if config.num_layers == 0 || config.num_heads == 0 {
            candle_core::bail!("T5 config needs at least one layer and one head");
        }
        let embed_name = if vb.contains_tensor("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let embed = vb.get((config.vocab_size, config.d_model), embed_name)?;
        let enc = vb.pp("encoder");
        let blocks = (0..config.num_layers)
            .map(|i| Block::load(enc.pp(format!("block.{i}")), config, i == 0, weights))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: Embedding::new(embed, config.d_model),
            blocks,
            final_layer_norm: RmsNorm::load(
                enc.pp("final_layer_norm"),
                config.d_model,
                config.layer_norm_epsilon,
            )?,
            config: config.clone(),
        })
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Encodes `ids` `[batch, seq]` (u32) with `mask` `[batch, seq]` (1 = token, 0 = padding, any
    /// float or integer dtype) into `[batch, seq, d_model]` f32 states. Padded keys are masked
    /// out of every attention; states at padded positions are still computed (as HF does) and
    /// are meant to be zeroed by the caller after projection.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if mask.dims2()? != (b, s) {
            candle_core::bail!(
                "T5 mask shape {:?} does not match ids shape {:?}",
                mask.shape(),
                ids.shape()
            );
        }
        let device = ids.device();
        let mut xs = self.embed_tokens.forward(&ids.to_dtype(DType::U32)?)?;
        // Keys that are padding get the most negative f32, as HF's mask does: they vanish from
        // the softmax while every query row keeps at least its own prompt's tokens.
        let keep = mask.to_dtype(DType::F32)?;
        let mask_bias =
            ((keep.ones_like()? - &keep)? * f64::from(f32::MIN))?.reshape((b, 1, 1, s))?;
        let position = self.blocks[0]
            .attn
            .position_bias(s, device)?
            .ok_or_else(|| candle_core::Error::Msg("T5 block 0 has no position bias".into()))?;
        let bias = position.broadcast_add(&mask_bias)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &bias)?;
        }
        self.final_layer_norm.forward(&xs)
    }
}
