//! The MusicGen decoder LM: summed codebook embeddings, sinusoidal positions, pre-LN transformer
//! blocks (causal self-attention with a preallocated KV cache, cross-attention over the projected
//! text states, GELU feed-forward), a final LayerNorm and one linear head per codebook.
//!
//! Weights load from the checkpoint prefix `decoder.` (the `MusicgenForCausalLM` inside
//! `MusicgenForConditionalGeneration`): `model.decoder.embed_tokens.{k}`,
//! `model.decoder.layers.{l}.{self_attn,encoder_attn,fc1,fc2,...}`, `model.decoder.layer_norm`
//! and `lm_heads.{k}`.
//!
//! Layer indexing: block `l` (0-based) is `model.decoder.layers.{l}`; its output is Hugging
//! Face's `hidden_states[l + 1]` (index 0 is the embeddings), except HF's last entry, which is
//! taken after the final LayerNorm. Steering adds to, and capture returns, the raw block output.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::config::DecoderConfig;
use super::dense::{Dense, Mapping, Pack, Store};
use super::gemv;
use super::load::Weights;

/// Sinusoidal position table, built exactly like HF's `MusicgenSinusoidalPositionalEmbedding`
/// (tensor2tensor layout: cos half then sin half, computed in f32).
fn sinusoidal_table(positions: usize, dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.saturating_sub(1).max(1)) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut table = Vec::with_capacity(positions * dim);
    for p in 0..positions {
        let p = p as f32;
        table.extend(freqs.iter().map(|f| (p * f).cos()));
        table.extend(freqs.iter().map(|f| (p * f).sin()));
        if dim % 2 == 1 {
            table.push(0.0);
        }
    }
    Tensor::from_vec(table, (positions, dim), device)
}

/// Additive mask value for excluded keys: the dtype's finite minimum, as HF uses (f32's minimum
/// would round to -inf in f16, and a row of -inf turns softmax into NaN).
fn masked_value(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => f64::from(half::f16::MIN),
        DType::BF16 => f64::from(half::bf16::MIN),
        _ => f64::from(f32::MIN),
    }
}

/// Multi-head attention without biases (both MusicGen attentions).
struct Attention {
    /// HF's `q_proj` scaled by `head_dim^-0.5` (HF scales the projected queries): folded into
    /// an owned weight, which saves a pass per attention and step (see [`Dense::scaled`]).
    q_proj: Dense,
    /// HF's `k_proj` and `v_proj` stacked into one `[2 * hidden, hidden]` product.
    kv_proj: Dense,
    out_proj: Dense,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(cfg: &DecoderConfig, vb: VarBuilder, mapping: Mapping) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let lin = |name: &str| Dense::load(h, h, vb.pp(name), mapping);
        let scaling = (cfg.head_dim() as f64).powf(-0.5);
        Ok(Attention {
            q_proj: lin("q_proj")?.scaled(scaling)?,
            kv_proj: Dense::load_stacked(h, h, &[vb.pp("k_proj"), vb.pp("v_proj")], mapping)?,
            out_proj: lin("out_proj")?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// Queries of `x` `[b, t, hidden]`, `[b, heads, t, head_dim]` (already scaled).
    fn queries(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.split_heads(&self.q_proj.forward(x)?)
    }

    /// `[b, t, hidden]` → `[b, heads, t, head_dim]` (contiguous).
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x` `[b, s, hidden]` in one contiguous `[2, b, heads, s, head_dim]`
    /// (keys first): one product and one layout pass, and one write into a [`KvCache`].
    fn keys_values(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        self.kv_proj
            .forward(x)?
            .reshape((b, s, 2, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()
    }

    /// Attends `q` (scaled, `[b, heads, t, head_dim]`) to `k`/`v` `[b, heads, s, head_dim]`;
    /// `mask` is additive, in the activations' dtype, broadcastable to `[b, heads, t, s]`.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let hidden = self.num_heads * self.head_dim;
        if t == 1 && mask.is_none() {
            if let Some(out) = one_query(q, k, v)? {
                return self.out_proj.forward(&out);
            }
        }
        // A cache kept in bf16 under f32 activations (see `Decoder::cache_dtype`).
        let (k, v) = (&k.to_dtype(q.dtype())?, &v.to_dtype(q.dtype())?);
        let scores = q.matmul(&k.transpose(2, 3)?)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(v)?; // [b, heads, t, head_dim]
        let out = out.transpose(1, 2)?.reshape((b, t, hidden))?;
        self.out_proj.forward(&out)
    }
}

/// Attention of one query per head (a generation step) on the CPU in f32, straight over the
/// keys and values where they lie (the cache's strided views, f32 or bf16): `q` `[b, heads, 1,
/// d]`, `k`/`v` `[b, heads, s, d]` with unit stride along `d`; returns `[b, 1, heads * d]`, or
/// `None` when the inputs do not fit (then candle's matmuls run). A step's two small products
/// through the general matmul cost more in dispatch than in arithmetic; here each (item, head)
/// is one task, its scores and weighted sum by the [`gemv`] kernels.
fn one_query(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Option<Tensor>> {
    use candle_core::{CpuStorage, Storage};
    if !q.device().is_cpu() || q.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, h, _, d) = q.dims4()?;
    let s = k.dim(2)?;
    let (ks, vs) = (k.stride(), v.stride());
    if ks[3] != 1 || vs[3] != 1 || v.dims4()? != (b, h, s, d) || s == 0 {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let qv: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let at = CacheViews {
        heads: h,
        d,
        s,
        k: (k_layout.start_offset(), ks),
        v: (v_layout.start_offset(), vs),
    };
    let out = match (&*k_storage, &*v_storage) {
        (Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) => {
            at.attend(&qv, kd, vd, b)
        }
        (Storage::Cpu(CpuStorage::BF16(kd)), Storage::Cpu(CpuStorage::BF16(vd))) => {
            at.attend(&qv, kd, vd, b)
        }
        _ => return Ok(None),
    };
    // [b, heads, d] is already [b, 1, heads * d] in memory.
    Ok(Some(Tensor::from_vec(out, (b, 1, h * d), q.device())?))
}

/// Where [`one_query`]'s keys and values lie in their storage: heads, head width, positions,
/// and each one's start offset and strides.
struct CacheViews<'a> {
    heads: usize,
    d: usize,
    s: usize,
    k: (usize, &'a [usize]),
    v: (usize, &'a [usize]),
}

impl CacheViews<'_> {
    /// Every (item, head)'s attention output, `[b, heads, d]`.
    fn attend<T: gemv::CacheElement + Send + Sync>(
        &self,
        qv: &[f32],
        kd: &[T],
        vd: &[T],
        b: usize,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let (h, d, s) = (self.heads, self.d, self.s);
        let ((k0, ks), (v0, vs)) = (self.k, self.v);
        let mut out = vec![0f32; b * h * d];
        out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
            let (bi, hi) = (row / h, row % h);
            let qr = &qv[row * d..(row + 1) * d];
            let kb = k0 + bi * ks[0] + hi * ks[1];
            let vb = v0 + bi * vs[0] + hi * vs[1];
            let mut scores = vec![0f32; s];
            if ks[2] == d {
                // The cache's keys of one head are consecutive rows.
                gemv::rows_dot(&kd[kb..kb + s * d], qr, d, &mut scores);
            } else {
                for (j, score) in scores.iter_mut().enumerate() {
                    let kr = &kd[kb + j * ks[2]..kb + j * ks[2] + d];
                    gemv::rows_dot(kr, qr, d, std::slice::from_mut(score));
                }
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
            let mut total = 0f32;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                total += *x;
            }
            scores.iter_mut().for_each(|p| *p /= total);
            gemv::weighted_rows(&scores, &vd[vb..vb + (s - 1) * vs[2] + d], vs[2], o);
        });
        out
    }
}

/// Self-attention keys and values of one block, preallocated for the whole generation:
/// `[2, b, heads, capacity, head_dim]`, keys first (the layout [`Attention::keys_values`] gives).
struct KvCache {
    kv: Tensor,
}

/// Per-block self-attention caches plus the number of positions already filled.
pub struct DecoderCache {
    blocks: Vec<KvCache>,
    len: usize,
    capacity: usize,
}

impl DecoderCache {
    /// Positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Cross-attention keys/values over the (projected) text states, computed once per generation,
/// with the additive mask that hides padded text positions.
#[derive(Clone)]
pub struct CrossContext {
    kv: Vec<(Tensor, Tensor)>,
    /// `None` when no row mixes text and padding: see [`Decoder::cross_context`].
    mask: Option<Tensor>,
}

/// Vectors added to block outputs during a forward pass (steering).
pub struct BlockOffsets<'a> {
    /// One optional vector per block: `[hidden]` for every position, `[t, hidden]` one row
    /// per position of the pass, or `[items, t or 1, hidden]` one per batch item (see
    /// [`crate::model::ResidualHook::offsets`]).
    pub offsets: &'a [Option<Tensor>],
    /// When `Some(n)`, only the first `n` batch rows (the conditional half) are steered.
    pub rows: Option<usize>,
}

struct Block {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    final_layer_norm: LayerNorm,
}

impl Block {
    fn load(
        cfg: &DecoderConfig,
        vb: VarBuilder,
        activations: DType,
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        // Norms are kept in the activations' dtype (candle's fused norm wants one dtype).
        let vba = vb.to_dtype(activations);
        let ln =
            |name: &str| candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vba.pp(name));
        Ok(Block {
            self_attn: Attention::load(cfg, vb.pp("self_attn"), mapping)?,
            self_attn_layer_norm: ln("self_attn_layer_norm")?,
            encoder_attn: Attention::load(cfg, vb.pp("encoder_attn"), mapping)?,
            encoder_attn_layer_norm: ln("encoder_attn_layer_norm")?,
            fc1: Dense::load(cfg.hidden_size, cfg.ffn_dim, vb.pp("fc1"), mapping)?,
            fc2: Dense::load(cfg.ffn_dim, cfg.hidden_size, vb.pp("fc2"), mapping)?,
            final_layer_norm: ln("final_layer_norm")?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        causal: Option<&Tensor>,
        cache: Option<(&KvCache, usize)>,
        cross: Option<(&(Tensor, Tensor), Option<&Tensor>)>,
    ) -> candle_core::Result<Tensor> {
        let h = self.self_attn_layer_norm.forward(x)?;
        let q = self.self_attn.queries(&h)?;
        let kv = self.self_attn.keys_values(&h)?;
        let kv = match cache {
            Some((c, offset)) => {
                c.kv.slice_set(&kv.to_dtype(c.kv.dtype())?, 3, offset)?;
                c.kv.narrow(3, 0, offset + h.dim(1)?)?
            }
            None => kv,
        };
        let attn = self.self_attn.attend(
            &q,
            &kv.narrow(0, 0, 1)?.squeeze(0)?,
            &kv.narrow(0, 1, 1)?.squeeze(0)?,
            causal,
        )?;
        let mut x = (x + attn)?;
        if let Some(((k, v), mask)) = cross {
            let h = self.encoder_attn_layer_norm.forward(&x)?;
            let q = self.encoder_attn.queries(&h)?;
            x = (&x + self.encoder_attn.attend(&q, k, v, mask)?)?;
        }
        let h = self.final_layer_norm.forward(&x)?;
        let h = self.fc1.forward(&h)?.gelu_erf()?;
        &x + self.fc2.forward(&h)?
    }
}

/// What a forward pass returns.
pub struct DecoderOutput {
    /// Hidden states after the final LayerNorm, `[b, t, hidden]`, in [`Decoder::activations`].
    pub hidden: Tensor,
    /// Outputs of the requested blocks, in request order, each `[b, t, hidden]`, f32.
    pub captured: Vec<Tensor>,
}

/// The decoder LM (`MusicgenForCausalLM`).
pub struct Decoder {
    embed_tokens: Vec<Embedding>,
    positions: Tensor,
    blocks: Vec<Block>,
    layer_norm: LayerNorm,
    /// Every codebook's head (`lm_heads.{k}`) stacked into one `[codebooks * vocab, hidden]`
    /// product.
    lm_heads: Dense,
    cfg: DecoderConfig,
    dtype: DType,
    activations: DType,
    /// What the self-attention caches hold (see [`Decoder::cache_dtype`]).
    cache: DType,
    device: Device,
    quantized: bool,
}

impl Decoder {
    /// Loads the decoder from `vb` rooted at the checkpoint's `decoder` prefix, with the
    /// activations' dtype [`Decoder::default_activations`] picks.
    pub fn load(cfg: &DecoderConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let activations = Self::default_activations(vb.device(), vb.dtype());
        Self::load_with_activations(cfg, vb, activations, None)
    }

    /// [`Decoder::load`] from `weights`, whose f32 products use their weights in place from the
    /// checkpoint's memory map where they can (f32 weights and activations on the CPU, the file
    /// a safetensors one; see [`Weights::mapped_f32`]) instead of reading them into memory:
    /// loading copies little, and every process on the checkpoint shares its pages.
    pub fn load_from(
        cfg: &DecoderConfig,
        weights: &Weights,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let activations = Self::default_activations(device, dtype);
        let vb = weights.var_builder(dtype, device).pp("decoder");
        Self::load_with_activations(cfg, vb, activations, Some(weights))
    }

    /// The dtype of hidden states, norms and caches for weights stored in `weights` on
    /// `device`. On the CPU it is f32: the step products stream half-precision weights through
    /// [`gemv`] and widen them there, so the stream stays exact at no cost. On an accelerator it
    /// is the weights' own dtype, as in a transformers model cast with `.to(dtype)`: a step is
    /// bound by kernel launches there, and f32 activations would cost two casts per product.
    pub fn default_activations(device: &Device, weights: DType) -> DType {
        if device.is_cpu() {
            DType::F32
        } else {
            weights
        }
    }

    /// What the self-attention caches hold for `weights` stored in `weights` (or packed, when
    /// `packed`) with `activations` on `device`: the activations' dtype, except on the CPU with
    /// f32 activations and weights that are already approximate (bf16, 8 or 4 bits), where the
    /// cache is bf16 (as a transformers model cast to bf16 keeps it). A generation step reads
    /// the whole cache of every block: at 600 positions of musicgen-small with guidance that is
    /// 470 MB in f32, more than its 8-bit weights, and it grows with the piece.
    fn cache_for(device: &Device, weights: DType, activations: DType, packed: bool) -> DType {
        if device.is_cpu() && activations == DType::F32 && (packed || weights == DType::BF16) {
            DType::BF16
        } else {
            activations
        }
    }

    /// What the self-attention caches hold (see [`Decoder::new_cache`]): bf16 on the CPU when
    /// the weights are bf16, 8-bit or 4-bit, else the activations' dtype.
    pub fn cache_dtype(&self) -> DType {
        self.cache
    }

    /// [`Decoder::load`] with an explicit activations dtype (tests run the accelerator's
    /// half-precision layout on the CPU with it), and `mapping` the weights whose f32 tensors may
    /// be used in place ([`Decoder::load_from`]; only with f32 weights and activations on the
    /// CPU, else every weight is read).
    pub fn load_with_activations(
        cfg: &DecoderConfig,
        vb: VarBuilder,
        activations: DType,
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        // Dense checks the weights' device and dtype; a mapped product also needs f32 rows.
        let mapping = mapping.filter(|_| activations == DType::F32);
        let vm = vb.pp("model").pp("decoder");
        let vma = vm.to_dtype(activations);
        let embed_tokens = (0..cfg.num_codebooks)
            .map(|k| {
                candle_nn::embedding(
                    cfg.vocab_size + 1,
                    cfg.hidden_size,
                    vma.pp("embed_tokens").pp(k),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|l| Block::load(cfg, vm.pp("layers").pp(l), activations, mapping))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let layer_norm =
            candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vma.pp("layer_norm"))?;
        let heads: Vec<VarBuilder> = (0..cfg.num_codebooks)
            .map(|k| vb.pp("lm_heads").pp(k))
            .collect();
        // The heads stay one owned product (32 MB for musicgen-small): one launch, not four.
        let lm_heads = Dense::load_stacked(cfg.hidden_size, cfg.vocab_size, &heads, None)?;
        let positions =
            sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size, vb.device())?
                .to_dtype(activations)?;
        Ok(Decoder {
            embed_tokens,
            positions,
            blocks,
            layer_norm,
            lm_heads,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            activations,
            cache: Self::cache_for(vb.device(), vb.dtype(), activations, false),
            device: vb.device().clone(),
            quantized: false,
        })
    }

    /// Stores every large weight (attention, feed-forward and head products) in 8 bits with a
    /// scale per output row, a quarter of f32's bytes, for the CPU's generation steps. Only with
    /// f32 activations on the CPU.
    pub fn quantize_q8(&mut self) -> candle_core::Result<()> {
        self.pack("8-bit", |rows, cols, factor| {
            gemv::Packed::Q8(gemv::Q8::from_rows(rows, cols, factor))
        })
    }

    /// Stores every large weight in 4 bits with a scale per 32 weights ([`gemv::Q4`]), under a
    /// sixth of f32's bytes, for the CPU's generation steps; their products take the input rows
    /// in 8 bits. Only with f32 activations on the CPU.
    pub fn quantize_q4(&mut self) -> candle_core::Result<()> {
        self.pack("4-bit", |rows, cols, factor| {
            gemv::Packed::Q4(gemv::Q4::from_rows(rows, cols, factor))
        })
    }

    /// Packs every large weight with `pack` (one format for all: a second call keeps the first).
    fn pack(&mut self, what: &str, pack: Pack) -> candle_core::Result<()> {
        if !self.device.is_cpu() || self.activations != DType::F32 {
            candle_core::bail!("{what} weights run on the CPU with f32 activations only");
        }
        for b in &mut self.blocks {
            for a in [&mut b.self_attn, &mut b.encoder_attn] {
                a.q_proj.pack(pack)?;
                a.kv_proj.pack(pack)?;
                a.out_proj.pack(pack)?;
            }
            b.fc1.pack(pack)?;
            b.fc2.pack(pack)?;
        }
        self.lm_heads.pack(pack)?;
        self.quantized = true;
        self.cache = Self::cache_for(&self.device, self.dtype, self.activations, true);
        Ok(())
    }

    /// Bytes of weights used in place from the checkpoint's memory map ([`Decoder::load_from`])
    /// rather than held in memory of the decoder's own.
    pub fn mapped_bytes(&self) -> usize {
        let dense = self.blocks.iter().flat_map(|b| {
            [&b.self_attn, &b.encoder_attn]
                .into_iter()
                .flat_map(|a| [&a.q_proj, &a.kv_proj, &a.out_proj])
                .chain([&b.fc1, &b.fc2])
        });
        dense
            .chain([&self.lm_heads])
            .map(|d| match &d.store {
                Store::Mapped(parts) => parts.iter().map(|p| 4 * p.values().len()).sum(),
                _ => 0,
            })
            .sum()
    }

    /// Whether the large weights are stored in 8 or 4 bits ([`Decoder::quantize_q8`],
    /// [`Decoder::quantize_q4`]).
    pub fn quantized(&self) -> bool {
        self.quantized
    }

    /// The decoder's shape.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Storage dtype of the large weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dtype of hidden states, norms and KV caches (see [`Decoder::default_activations`]).
    /// Captured block outputs and logits are returned in f32 whatever it is.
    pub fn activations(&self) -> DType {
        self.activations
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Allocates self-attention caches for `batch` rows and up to `capacity` positions, once,
    /// so generation steps write in place instead of concatenating.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> candle_core::Result<DecoderCache> {
        let shape = (
            2,
            batch,
            self.cfg.num_attention_heads,
            capacity,
            self.cfg.head_dim(),
        );
        let blocks = (0..self.blocks.len())
            .map(|_| {
                Ok(KvCache {
                    kv: Tensor::zeros(shape, self.cache, &self.device)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderCache {
            blocks,
            len: 0,
            capacity,
        })
    }

    /// Precomputes every block's cross-attention keys/values over `states` `[b, s, hidden]`
    /// (already projected to the decoder width); `mask` `[b, s]` holds 1 for real text
    /// positions and 0 for padding. Padded positions are zeroed first, as HF does.
    pub fn cross_context(
        &self,
        states: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<CrossContext> {
        let keep = mask.to_dtype(DType::F32)?;
        let states = states
            .to_dtype(DType::F32)?
            .broadcast_mul(&keep.unsqueeze(2)?)?
            .to_dtype(self.activations)?;
        let kv = self
            .blocks
            .iter()
            .map(|b| {
                let kv = b.encoder_attn.keys_values(&states)?;
                Ok((kv.get(0)?, kv.get(1)?))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // A fully masked row (the unconditional half of CFG) has all-zero keys and values, so it
        // attends uniformly to zeros with or without HF's finite-min additive mask, and a fully
        // kept row's mask is zero: the mask only matters for a row that mixes text and padding
        // (prompts of different lengths). Without one, each step skips a pass per block.
        let (b, s) = mask.dims2()?;
        let kept: Vec<f32> = keep.sum(1)?.to_vec1()?;
        let mixed = kept.iter().any(|&n| n != 0.0 && n != s as f32);
        let mask = if mixed {
            let hidden = ((1.0 - keep)? * masked_value(self.activations))?;
            Some(hidden.to_dtype(self.activations)?.reshape((b, 1, 1, s))?)
        } else {
            None
        };
        Ok(CrossContext { kv, mask })
    }

    /// Runs the blocks over `codes` `[b, codebooks, t]` (u32 ids, pad/BOS = vocab_size).
    ///
    /// With `cache`, positions continue from `cache.len()` and keys/values are appended; without,
    /// the pass starts at position 0 (teacher forcing). `cross` is the text conditioning (none
    /// for probing); `steer` adds vectors to block outputs; `capture` lists blocks whose outputs
    /// are returned.
    pub fn forward(
        &self,
        codes: &Tensor,
        cross: Option<&CrossContext>,
        mut cache: Option<&mut DecoderCache>,
        steer: Option<&BlockOffsets>,
        capture: &[usize],
    ) -> candle_core::Result<DecoderOutput> {
        let (b, k, t) = codes.dims3()?;
        if k != self.cfg.num_codebooks {
            candle_core::bail!(
                "codes have {k} codebooks, the model has {}",
                self.cfg.num_codebooks
            );
        }
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let end = offset + t;
        if end > self.positions.dim(0)? {
            candle_core::bail!(
                "sequence of {end} positions is longer than the model's limit of {}",
                self.positions.dim(0)?
            );
        }
        if let Some(c) = cache.as_ref() {
            if end > c.capacity {
                candle_core::bail!("KV cache holds {} positions, {end} needed", c.capacity);
            }
        }
        let codes = codes.to_dtype(DType::U32)?;
        let mut x = self.embed_tokens[0].forward(&codes.narrow(1, 0, 1)?.squeeze(1)?)?;
        for (i, emb) in self.embed_tokens.iter().enumerate().skip(1) {
            x = (x + emb.forward(&codes.narrow(1, i, 1)?.squeeze(1)?)?)?;
        }
        let pos = self.positions.narrow(0, offset, t)?;
        x = x.broadcast_add(&pos)?;

        let causal = if t > 1 {
            // Query i (absolute offset + i) sees keys 0..=offset + i.
            let masked = masked_value(self.activations) as f32;
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| (0..end).map(move |j| if j <= offset + i { 0.0 } else { masked }))
                .collect();
            Some(Tensor::from_vec(mask, (1, 1, t, end), &self.device)?.to_dtype(self.activations)?)
        } else {
            None
        };

        let mut captured: Vec<Option<Tensor>> = vec![None; capture.len()];
        for (l, block) in self.blocks.iter().enumerate() {
            let kv = cache.as_ref().map(|c| (&c.blocks[l], offset));
            let cross_l = cross.map(|c| (&c.kv[l], c.mask.as_ref()));
            x = block.forward(&x, causal.as_ref(), kv, cross_l)?;
            if let Some(s) = steer {
                if let Some(Some(v)) = s.offsets.get(l) {
                    x = add_offset(&x, v, s.rows)?;
                }
            }
            for (slot, &want) in captured.iter_mut().zip(capture) {
                if want == l {
                    *slot = Some(x.to_dtype(DType::F32)?);
                }
            }
        }
        if let Some(c) = cache.as_mut() {
            c.len = end;
        }
        let captured = captured
            .into_iter()
            .zip(capture)
            .map(|(c, l)| {
                c.ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "block {l} does not exist (the model has {} blocks)",
                        self.blocks.len()
                    ))
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let _ = b;
        Ok(DecoderOutput {
            hidden: self.layer_norm.forward(&x)?,
            captured,
        })
    }

    /// Logits of every codebook head: `hidden` `[b, t, hidden]` → `[b, codebooks, t, vocab]`,
    /// f32.
    pub fn logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, _) = hidden.dims3()?;
        self.lm_heads
            .forward(hidden)?
            .reshape((b, t, self.cfg.num_codebooks, self.cfg.vocab_size))?
            .transpose(1, 2)?
            .contiguous()?
            .to_dtype(DType::F32)
    }
}

/// Adds `v` to `x` `[b, t, hidden]`, or only to its first `rows` batch rows: `v` `[hidden]` to
/// every position, `[t, hidden]` one row per position, or `[items, t or 1, hidden]` one per batch
/// item, repeated over the classifier-free-guidance halves (the rows are `[cond; uncond]`, each
/// in item order).
fn add_offset(x: &Tensor, v: &Tensor, rows: Option<usize>) -> candle_core::Result<Tensor> {
    let hidden = x.dim(2)?;
    let v = v.to_dtype(x.dtype())?;
    let v = if v.rank() == 3 {
        v
    } else {
        v.reshape((1, (), hidden))?
    };
    let steered = rows.unwrap_or(x.dim(0)?).min(x.dim(0)?);
    let items = v.dim(0)?;
    let v = if items > 1 && items < steered {
        Tensor::cat(&vec![&v; steered / items], 0)?
    } else {
        v
    };
    if steered < x.dim(0)? {
        let head = x.narrow(0, 0, steered)?.broadcast_add(&v)?;
        let tail = x.narrow(0, steered, x.dim(0)? - steered)?;
        Tensor::cat(&[&head, &tail], 0)
    } else {
        x.broadcast_add(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;

    #[test]
    fn sinusoid_matches_hf_layout() {
        // HF: emb = exp(arange(half) * -(ln(1e4) / (half - 1))); [cos(p*emb), sin(p*emb)].
        let t = sinusoidal_table(4, 8, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
        assert_eq!(v[0], vec![1., 1., 1., 1., 0., 0., 0., 0.]);
        let f1 = (-(10000f64.ln() / 3.0)).exp();
        assert!((v[3][1] as f64 - (3.0 * f1).cos()).abs() < 1e-6);
        assert!((v[3][5] as f64 - (3.0 * f1).sin()).abs() < 1e-6);
        assert!((v[2][3] as f64 - (2.0f64 * 1e-4).cos()).abs() < 1e-6);
    }

    #[test]
    fn offset_only_on_conditional_rows() {
        let x = Tensor::zeros((4, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let v = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let y = add_offset(&x, &v, Some(2)).unwrap();
        let s: Vec<f32> = y.sum((1, 2)).unwrap().to_vec1().unwrap();
        assert_eq!(s, vec![12., 12., 0., 0.]);
    }

    #[test]
    fn one_query_attention_matches_the_matmul_path_over_cache_views() {
        // Heads narrower than a vector, musicgen's 64, and one with a tail past the vectors.
        for (b, h, d, cap, s) in [(2, 3, 8, 20, 7), (2, 4, 64, 40, 33), (1, 2, 72, 9, 9)] {
            one_query_matches(b, h, d, cap, s);
        }
    }

    fn one_query_matches(b: usize, h: usize, d: usize, cap: usize, s: usize) {
        let dev = Device::Cpu;
        let cache = Tensor::randn(0f32, 1., (2, b, h, cap, d), &dev).unwrap();
        let kv = cache.narrow(3, 0, s).unwrap();
        let k = kv.narrow(0, 0, 1).unwrap().squeeze(0).unwrap();
        let v = kv.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
        let q = Tensor::randn(0f32, 1., (b, h, 1, d), &dev).unwrap();
        let scores = q
            .matmul(&k.contiguous().unwrap().transpose(2, 3).unwrap())
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let want = probs
            .matmul(&v.contiguous().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, 1, h * d))
            .unwrap();
        let got = one_query(&q, &k, &v).unwrap().expect("fits the fast path");
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "b{b} h{h} d{d} s{s}: {diff}");
        // A bf16 cache: the same as the f32 path over its values widened.
        let cache16 = cache.to_dtype(DType::BF16).unwrap();
        let kv16 = cache16.narrow(3, 0, s).unwrap();
        let k16 = kv16.narrow(0, 0, 1).unwrap().squeeze(0).unwrap();
        let v16 = kv16.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
        let widened = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want16 = one_query(&q, &widened(&k16), &widened(&v16))
            .unwrap()
            .unwrap();
        let got16 = one_query(&q, &k16, &v16)
            .unwrap()
            .expect("fits the fast path");
        let diff = max_abs_diff(&got16, &want16);
        assert!(diff < 1e-5, "bf16 b{b} h{h} d{d} s{s}: {diff}");
        assert!(max_abs_diff(&want16, &want) > 1e-4, "bf16 rounding shows");
    }
}
