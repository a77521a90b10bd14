//! The large bias-free products of the decoder and the T5 text encoder, wherever their weights
//! live: in memory candle owns, used in place from the checkpoint's memory map, or packed in 8 or
//! 4 bits.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::gemv;
use super::load::{MappedF32, Weights};

/// A bias-free linear layer whose weight `[out, in]` is stored in the model's weight dtype; the
/// product runs in the activations' dtype (the decoder's: see
/// [`Decoder::activations`](super::decoder::Decoder::activations)). On the CPU, few-row products
/// (generation steps) take the [`gemv`] path, which widens bf16 weights as it streams them; f16
/// weights are widened whole, per product.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    pub(crate) store: Store,
    /// What the product's output is multiplied by: HF's query scaling for a weight used in
    /// place (an owned weight has it folded in at load, see [`Dense::scaled`]).
    out_scale: f64,
}

/// Where a [`Dense`] weight lives.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    /// A tensor candle owns, in the model's weight dtype.
    Owned(Tensor),
    /// f32 rows used in place from the checkpoint's memory map; several parts (HF's `k_proj`
    /// and `v_proj`) are stacked along the outputs.
    Mapped(Vec<MappedF32>),
    /// 8 or 4 bits (`Decoder::quantize_q8`, `Decoder::quantize_q4`).
    Packed(gemv::Packed),
}

/// Where f32 weights may be used in place ([`Weights::mapped_f32`]); `None` reads every weight
/// into memory candle owns.
pub(crate) type Mapping<'a> = Option<&'a Weights>;

impl Dense {
    /// The layer under `vb` (its `weight`), in place from `mapping` where it can be.
    pub(crate) fn load(
        in_dim: usize,
        out_dim: usize,
        vb: VarBuilder,
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        Self::load_stacked(in_dim, out_dim, &[vb], mapping)
    }

    /// Several same-shaped layers stacked along their outputs into one product, named by their
    /// checkpoint prefixes (`lm_heads.0`, `lm_heads.1`, ...): one launch instead of one per layer
    /// for an owned weight (a mapped one runs a product per part).
    pub(crate) fn load_stacked(
        in_dim: usize,
        out_dim: usize,
        vbs: &[VarBuilder],
        mapping: Mapping,
    ) -> candle_core::Result<Self> {
        // In place only where the product runs on the CPU in f32, the weights' own dtype.
        let in_place = vbs
            .iter()
            .all(|vb| vb.device().is_cpu() && vb.dtype() == DType::F32);
        let mapped: Option<Vec<MappedF32>> = mapping.filter(|_| in_place).and_then(|weights| {
            vbs.iter()
                .map(|vb| {
                    weights
                        .mapped_f32(&format!("{}.weight", vb.prefix()))
                        .filter(|m| m.dims() == [out_dim, in_dim])
                })
                .collect()
        });
        let store = match mapped {
            Some(parts) => Store::Mapped(parts),
            None => {
                let parts = vbs
                    .iter()
                    .map(|vb| vb.get((out_dim, in_dim), "weight"))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let weight = match parts.as_slice() {
                    [one] => one.contiguous()?,
                    _ => Tensor::cat(&parts, 0)?,
                };
                Store::Owned(weight)
            }
        };
        Ok(Dense {
            store,
            out_scale: 1.0,
        })
    }

    /// Multiplies the product by `factor`: folded into an owned weight once, at load, so the
    /// product needs no separate scaling pass (the scale is applied in f32, then stored back in
    /// the weight's dtype); a weight used in place scales the product's output.
    pub(crate) fn scaled(mut self, factor: f64) -> candle_core::Result<Self> {
        match &self.store {
            Store::Owned(w) => {
                let dtype = w.dtype();
                let w = (w.to_dtype(DType::F32)? * factor)?.to_dtype(dtype)?;
                self.store = Store::Owned(w);
            }
            Store::Mapped(_) | Store::Packed(_) => self.out_scale *= factor,
        }
        Ok(self)
    }

    /// Stores the weight as `pack` makes it (see [`gemv::Packed`]) and frees the float copy.
    /// Rows used in place are packed from the memory map as they lie: a copy of the weight in
    /// f32 first took most of a q8 load (fresh pages to fill, three times over).
    pub(crate) fn pack(&mut self, pack: Pack) -> candle_core::Result<()> {
        let factor = self.out_scale as f32;
        let packed = match &self.store {
            Store::Packed(_) => return Ok(()),
            Store::Mapped(parts) => {
                let cols = parts.first().map_or(0, |p| p.dims()[1]);
                let rows: Vec<&[f32]> = parts
                    .iter()
                    .flat_map(|p| gemv::row_slices(p.values(), p.dims()[0], cols))
                    .collect();
                let packed = pack(&rows, cols, factor);
                parts.iter().for_each(MappedF32::release);
                packed
            }
            Store::Owned(w) => gemv::with_f32_rows(w, |rows, cols| pack(rows, cols, factor))?,
        };
        self.store = Store::Packed(packed);
        self.out_scale = 1.0;
        Ok(())
    }

    /// `[.., in]` → `[.., out]` in `x`'s dtype, flattening leading dims into one product.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let last = dims[dims.len() - 1];
        let rows = x.reshape((x.elem_count() / last, last))?;
        let y = match &self.store {
            // Few rows stream the packed weight; many (a prompt, a teacher-forced pass) widen it.
            Store::Packed(q) => match q.matmul_t(&rows)? {
                Some(y) => y,
                None => rows.matmul(&q.dequantize(rows.device())?.t()?)?,
            },
            Store::Mapped(parts) => {
                let ys = parts
                    .iter()
                    .map(|p| {
                        let (n, k) = (p.dims()[0], p.dims()[1]);
                        gemv::matmul_t_rows(&rows, p.values(), n, k)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                match ys.as_slice() {
                    [one] => one.clone(),
                    _ => Tensor::cat(&ys, 1)?,
                }
            }
            Store::Owned(w) => match gemv::matmul_t(&rows, w)? {
                Some(y) => y,
                None if rows.dtype() == w.dtype() => rows.matmul(&w.t()?)?,
                // candle's CPU matmul has no fast half-precision path: widen the weight.
                None if rows.device().is_cpu() => rows.matmul(&w.to_dtype(rows.dtype())?.t()?)?,
                // Activations held wider than the weights on an accelerator: cast the few rows,
                // not the whole weight.
                None => rows
                    .to_dtype(w.dtype())?
                    .matmul(&w.t()?)?
                    .to_dtype(rows.dtype())?,
            },
        };
        let y = if self.out_scale == 1.0 {
            y
        } else {
            (y * self.out_scale)?
        };
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = y.dim(1)?;
        y.reshape(out_dims)
    }
}

/// Makes a weight's packed form from its rows, each value multiplied by a factor first
/// (`Decoder::quantize_q8`, `Decoder::quantize_q4`; see [`gemv::Q8::from_rows`]).
pub(crate) type Pack = fn(&[&[f32]], usize, f32) -> gemv::Packed;
